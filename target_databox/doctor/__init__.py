"""`target-databox --doctor`: settle Databox's open questions (API reference Part B) on a
real account in one command, and recommend the settings that are fastest and safe there.

It creates a scratch data source, asks each question with as few requests as it can
(<= 60, paced by the target's own limiter), deletes the data source again (also after an
error or Ctrl-C, unless kept) and exits 0 only when the target handles every answer.
"""

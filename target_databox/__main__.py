"""`python -m target_databox` runs the target."""

from target_databox.target import TargetDatabox

TargetDatabox.cli()

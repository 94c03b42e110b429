"""target-databox: a Singer target for Databox's dataset-based Ingestion API v1."""

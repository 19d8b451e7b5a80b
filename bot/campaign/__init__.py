"""Use cases with no Telegram in them: ingest, crops, tasks, answers, scoring, export."""

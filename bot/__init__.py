"""MedCrowd's application: data model, file store, campaign use cases, Telegram bot, jobs, CLI."""

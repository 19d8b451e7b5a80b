"""The data model (SQLModel tables), engine and session factories, queries and migrations."""

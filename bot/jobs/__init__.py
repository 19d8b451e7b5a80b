"""The job runner: in-process by default, Ray when configured."""

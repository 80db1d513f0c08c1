"""Validators: built-in guards for PreToolUse and analyzers for PostToolUse."""

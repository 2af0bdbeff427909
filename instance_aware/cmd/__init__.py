"""Command-line tools: ``instance-aware-manage`` for operators."""

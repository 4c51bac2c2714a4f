"""workshop.yaml: its fields, sections and model, YAML loading, messages, starter, reference."""

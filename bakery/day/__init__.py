"""The workshop day over ssh: targets, late trainees, collect, and what trainees are handed."""

"""Commands that look at a config before training: `summary` (parameter counts and FLOPs of its
model) and `preview` (its dataset summary and a contact sheet of training clips)."""

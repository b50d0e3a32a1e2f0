"""Training: the loop and its compiled step, the train state, optimizer and schedule, losses,
and preflight (will a recipe fit and how fast will it train)."""

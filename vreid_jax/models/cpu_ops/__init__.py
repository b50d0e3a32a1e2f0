"""Platform-chosen forms of ops that XLA:CPU differentiates slowly: max-pool with a tie rule and
convolutions as matrix products. `models.layers.Ops` picks them per platform."""

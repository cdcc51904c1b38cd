"""Files added to a peer's extracted test folder (its sdist lacks them)."""

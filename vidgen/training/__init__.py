"""Training every stage of the cascade with one accelerate loop (`vidgen train CONFIG`)."""

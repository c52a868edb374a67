"""Fine-tuning recipes (SFT full and LoRA) on TRL/PEFT, scaled through accelerate."""

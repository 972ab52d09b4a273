"""The f5-batch producer: turns corpora into jobs, tracks them, and assembles the results. Never imports torch."""

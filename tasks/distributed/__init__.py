"""Running a step's work on N processes (ranks) from a Prefect task: launch.py starts them
through torchrun or the deepspeed launcher and waits; worker.py is what each rank runs."""

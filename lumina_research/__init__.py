"""Research code that trains and evaluates the tiny models: the procedural shape world (`world`), the training
recipes (`train`, `python -m lumina_research.train`) and the benches (`eval`, `python -m lumina_research.eval`).
It imports the library (`lumina`) and never the other way round, so the library, CLI and app ship without it;
what the app needs from training (the world's vocabulary) travels as files in the model folder.
"""

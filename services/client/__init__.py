"""The terminal client of the Debate Engine.

    debate-engine demo [--target HOST:PORT] [--rounds 3] [--seed 7] [--verbose]
        Starts the suite (unless --target is given), runs a debate between two simulated
        debaters and shows it live: each debater's tokens as they arrive, the judge's scores
        after each round, the verdict and the cost table. Exits 0 when the debate completes.

    debate-engine debate --topic TEXT --debater NAME=MODEL:PERSONA[:STANCE] (2 to 8 times; a model
                         with ':' in brackets: NAME=[ollama/llama3:8b]:PERSONA[:STANCE])
                         --judge MODEL [--judge MODEL2] [--rounds N]
                         [--format simultaneous|sequential] [--max-tokens-per-turn N]
                         [--budget USD] [--seed N] [--cancel-on-exit] [--target HOST:PORT]
                         [--turn-timeout-seconds N] [--timeout-policy skip_turn|forfeit|end_debate]
        The same with your own debate; models as LiteLLM names them (provider keys are read
        by the services from their environment) or sim/debater and sim/judge.

    debate-engine attach DEBATE_ID [--after N] [--target HOST:PORT]
        Watches a debate; resumes with after_sequence when the stream drops.

    debate-engine list [--state running] [--target HOST:PORT]
    debate-engine cancel DEBATE_ID [--target HOST:PORT]

Output is coloured on a terminal (unless NO_COLOR is set); in a pipe or a CI log it is plain
whole lines, each debater's line prefixed with its name. Exit codes: 0 the debate completed
(or the command succeeded), 1 it failed, was cancelled or exceeded its budget, or the suite
could not be reached, 2 bad input (the server's field violations are printed) or a provider key
missing from the services' environment (nothing started), 130 Ctrl-C (`debate` and `attach` only
stop watching: the debate goes on, and the commands to re-attach and cancel are printed).

Modules: `view` renders events (with `panels`, the score, verdict and cost tables), `follow`
reads the stream and resumes it, `style` holds the terminal helpers, `session` connects (or
starts a suite), runs or watches a debate and turns failures into exit codes, `commands` the
subcommands and the debate configurations they build.
"""

"""The context engine: sources notice events, triggers turn them into agent runs, and
notifications tell the person (issue 19)."""

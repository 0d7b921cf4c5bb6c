"""Comparing library versions: environments built from a spec (``envs``), interleaved A/B
runs with a verdict that can say "cannot tell" (``ab``), and bisection across a package's
releases (``bisect``)."""

"""The standard matrices (smoke, nightly, gpu-slice), shipped so that ``--matrix NAME`` works from an installed harness."""

"""What is judged: thresholds (``thresholds``), repeats folded (``stats``), the history window
and its interval (``window``), the verdict (``gate``), change points (``changes``), accepted
changes (``accept``), published scores (``references``), and the gate measured on real and
simulated nights (``calibrate``, ``simulate``)."""

"""What is shown: two result sets side by side (``compare``), the terminal summary
(``tables``), every run as a DataFrame (``history``) and the interactive HTML report (``html``)."""

"""The Textual dashboard: `console` / `console ui [JOB]` (app.py, widgets/, screens/, app.tcss)."""

"""Self-contained HTML reports (one file, inline CSS, images embedded): see `tasks.report.html`."""

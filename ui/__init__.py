"""App-side helpers the pages share: plotly figures, the folder uploader, session-state keys."""

"""Plotly figure builders: analysis results in, ``plotly.graph_objects.Figure`` out."""

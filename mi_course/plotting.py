"""Figures, all plotly: values by layer as lines, a heatmap (layer x position, head x layer, ...) whose
token labels show whitespace, one head's attention pattern, and direct contributions by layer.

Every token on an axis or in a cell goes through :func:`mi_course.tokens.token_label`, so a bare
space reads ``␣`` and a newline ``↵`` instead of an empty label, and is labelled with its position
(``"9: ␣John"``), which keeps repeated tokens apart. Every function returns a ``go.Figure``: call
``.show()``, or ``.update_layout(...)`` first for axis titles and size.

Shapes: per-layer values ``[n_layers]`` (a list, an array or a tensor); a heatmap's values
``[len(y), len(x)]``, row 0 at the top; an attention pattern ``[q, k]``.
"""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go
import torch

from mi_course.tokens import token_label


def token_labels(tokens: list[str], positions=None) -> list[str]:
    """Axis labels ``"9: ␣John"`` for decoded ``tokens`` at ``positions`` (default: all), whitespace made visible."""
    positions = range(len(tokens)) if positions is None else positions
    return [f"{p}: {token_label(tokens[p])}" for p in positions]


def position_labels(model, ids: torch.Tensor, positions=None) -> list[str]:
    """:func:`token_labels` of the first prompt of ``ids`` (``[batch, pos]``) at ``positions`` (default: all)."""
    return token_labels([model.tokenizer.decode([int(i)]) for i in ids[0]], positions)


def by_layer(curves: dict, title: str = "", yaxis: str = "value", chance: float | None = None, layers=None,
             **layout) -> go.Figure:
    """Lines of per-layer values, one per named curve: ``curves`` maps a name to ``[n_layers]`` values, drawn at
    ``layers`` (default ``0, 1, ...``). ``chance`` draws a dotted line at that value; ``layout`` goes to
    ``update_layout`` (e.g. ``yaxis_range=[0, 1.02]``, ``xaxis_title=...``)."""
    fig = go.Figure()
    for name, values in curves.items():
        values = torch.as_tensor(values).tolist()
        x = list(range(len(values))) if layers is None else list(layers)
        fig.add_trace(go.Scatter(x=x, y=values, mode="lines+markers", name=name))
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=yaxis, template="simple_white",
                      width=750, height=420)
    return fig.update_layout(**layout)


def heatmap(values, x: list, y: list, title: str = "", zmid: float = 0.0, label: str = "value",
            text=None, zrange: tuple[float, float] | None = None) -> go.Figure:
    """A heatmap of ``[len(y), len(x)]`` values, row 0 at the top: red-white-blue centred at ``zmid`` when they
    lie on both sides of it, else one sequential scale (darker = further from ``zmid``). ``text``
    (``[len(y), len(x)]`` strings) is written in the cells; ``zrange`` fixes the colour range."""
    grid = torch.as_tensor(values).detach().cpu().float().numpy()
    signed = bool((grid < zmid).any() and (grid > zmid).any())
    scale = "RdBu" if signed else ("Blues" if (grid >= zmid).all() else "Reds_r")
    zmin, zmax = zrange if zrange is not None else (None, None)
    fig = px.imshow(
        grid,
        x=[str(v) for v in x],
        y=[str(v) for v in y],
        zmin=zmin,
        zmax=zmax,
        color_continuous_scale=scale,
        color_continuous_midpoint=zmid if signed else None,
        aspect="auto",
        labels={"color": label},
        title=title,
    )
    if text is not None:
        fig.update_traces(text=text, texttemplate="%{text}")
    return fig


def attention_pattern(pattern: torch.Tensor, tokens: list[str], title: str = "attention pattern") -> go.Figure:
    """One head's attention pattern ``[q, k]`` as a heatmap: rows are the attending (query) tokens, columns
    the attended-to (key) tokens, both labelled by :func:`token_labels`."""
    labels = token_labels(tokens)
    fig = heatmap(pattern, labels, labels, title, label="attention", zrange=(0, 1))
    return fig.update_layout(xaxis_title="key (attended to)", yaxis_title="query", width=620, height=620)


def contributions_by_layer(embed: float, attn, mlp, title: str = "Direct logit attribution") -> go.Figure:
    """Bars of direct contributions ``[n_layers]`` by layer: attention and MLP side by side, the embeddings at -1."""
    layers = list(range(len(attn)))
    fig = go.Figure([
        go.Bar(x=layers, y=[float(a) for a in attn], name="attention"),
        go.Bar(x=layers, y=[float(m) for m in mlp], name="MLP"),
        go.Bar(x=[-1], y=[float(embed)], name="embeddings"),
    ])
    fig.update_layout(title=title, barmode="group", xaxis_title="layer (-1 = embeddings)",
                      yaxis_title="contribution to the logit difference")
    return fig

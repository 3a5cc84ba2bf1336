"""Rendering of the demo world (private): photo-like scenes of objects, and five painting styles applied to them.

Everything is a batched torch op on per-image parameters: the caller draws each image's random numbers from a
generator seeded with that image's index (``world.py``), so an image does not depend on the batch it is rendered in.
All ops are per-image element-wise arithmetic, interpolation and shifted sums (no batched convolution whose
algorithm could depend on the batch size).

Coordinates: pixel centres in ``[-1, 1]``, ``x`` to the right, ``y`` down. Images are ``(N, 3, S, S)`` RGB in
``[0, 1]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["OBJECTS", "STYLES", "grid", "paint", "scene"]

#: Object classes of the photo domain, in label order.
OBJECTS: tuple[str, ...] = ("ball", "box", "tree", "ring", "moon", "cross")
#: Painting styles of the art domain, in label order.
STYLES: tuple[str, ...] = ("pointillism", "hatching", "colour_field", "brush_strokes", "mosaic")
#: How much each object class may rotate (fraction of a full turn): trees stay upright.
_SPIN = torch.tensor([1.0, 1.0, 0.06, 1.0, 1.0, 1.0])
#: Typical colour of each object class (RGB): a red ball, a wooden box, a green tree, a golden ring ...
_PALETTE = torch.tensor([
    [0.85, 0.2, 0.15], [0.6, 0.4, 0.2], [0.15, 0.55, 0.2], [0.95, 0.8, 0.2], [0.92, 0.92, 0.8], [0.2, 0.3, 0.85],
])


def grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``(X, Y)``, each ``(1, S, S)`` in ``[-1, 1]``."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x.unsqueeze(0), y.unsqueeze(0)


def _sdf(cls: int, u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Signed distance-like field (< 0 inside) of object class ``cls``, in object coordinates ``(N, S, S)``."""
    name = OBJECTS[cls]
    if name in ("ball", "moon", "ring"):
        rad = torch.sqrt(u * u + v * v)
        if name == "ball":
            return rad - r
        if name == "ring":
            return (rad - 0.68 * r).abs() - 0.3 * r
        return torch.maximum(rad - r, 0.85 * r - torch.sqrt((u - 0.5 * r) ** 2 + v * v))
    if name == "box":
        return torch.maximum(u.abs(), v.abs()) - 0.8 * r
    if name == "tree":
        canopy = torch.maximum(torch.maximum(v - 0.5 * r, -r - v), u.abs() - 0.55 * (v + r))
        trunk = torch.maximum(u.abs() - 0.16 * r, (v - 0.75 * r).abs() - 0.25 * r)
        return torch.minimum(canopy, trunk)
    au, av = u.abs(), v.abs()
    return torch.minimum(torch.maximum(au - r, av - 0.3 * r), torch.maximum(au - 0.3 * r, av - r))


def _object(p: Tensor, cls: Tensor, cx: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """One object per image: soft mask ``(N, 1, S, S)`` and shaded colour ``(N, 3, S, S)``.

    ``p`` ``(N, 8)`` uniforms: y position, radius, rotation, colour (3), light angle, light strength; ``cls`` ``(N,)``.
    """
    x, y = grid(size)
    cy = (p[:, 0] * 0.7 - 0.35).view(-1, 1, 1)
    r = (0.36 + 0.22 * p[:, 1]).view(-1, 1, 1)
    phi = ((p[:, 2] - 0.5) * 2 * math.pi * _SPIN[cls]).view(-1, 1, 1)
    dx, dy = x - cx.view(-1, 1, 1), y - cy
    u = dx * torch.cos(phi) + dy * torch.sin(phi)
    v = -dx * torch.sin(phi) + dy * torch.cos(phi)
    sdf = torch.empty_like(u)
    for k in range(len(OBJECTS)):
        sel = (cls == k).nonzero().flatten()
        if sel.numel():
            sdf[sel] = _sdf(k, u[sel], v[sel], r[sel])
    mask = torch.sigmoid(-sdf * size / 1.5).unsqueeze(1)
    colour = 0.6 * _PALETTE[cls] + 0.4 * p[:, 3:6]  # each class has a typical colour, as objects in photos do
    stripes = torch.where(cls == OBJECTS.index("box"), 0.22, 0.0).view(-1, 1, 1)
    texture = 1 - stripes * (torch.sin(u * size * 1.6) > 0).float()  # planks on boxes
    light = (p[:, 6] * 2 * math.pi).view(-1, 1, 1)
    facing = (-(dx * torch.cos(light) + dy * torch.sin(light)) / r).clamp(-1.2, 1.2)
    shade = (1 + 0.45 * p[:, 7].view(-1, 1, 1) * facing) * texture
    return mask, (colour.view(-1, 3, 1, 1) * shade.unsqueeze(1)).clamp(0, 1)


def scene(p: Tensor, noise: Tensor, objects: Tensor, size: int) -> Tensor:
    """Photo-like scenes: sky/ground background, smooth texture, up to two shaded objects, sensor noise.

    Args:
        p: ``(N, 40)`` uniforms (background 20, object slots 2 × 10).
        noise: ``(N, 3, S, S)`` standard normal pixel noise.
        objects: ``(N, 2)`` object class per slot, ``-1`` = empty; when both slots are used slot 0 sits left and
            slot 1 right (both smaller), slot 0 alone is placed anywhere.
        size: S.

    Returns:
        ``(N, 3, S, S)`` RGB in ``[0, 1]``.
    """
    n = p.shape[0]
    _, y = grid(size)
    sky = torch.stack([0.45 + 0.3 * p[:, 0], 0.55 + 0.3 * p[:, 1], 0.75 + 0.25 * p[:, 2]], 1).view(n, 3, 1, 1)
    ground = torch.stack([0.25 + 0.35 * p[:, 3], 0.3 + 0.35 * p[:, 4], 0.1 + 0.25 * p[:, 5]], 1).view(n, 3, 1, 1)
    horizon = (p[:, 6] * 0.8 - 0.2).view(-1, 1, 1)
    t = torch.sigmoid((y - horizon) * size / 3).unsqueeze(1)
    img = sky * (1 - 0.12 * (y + 1)).unsqueeze(1) * (1 - t) + ground * t
    coarse = p[:, 7:19].view(n, 3, 2, 2) * 2 - 1  # low-frequency light and colour variation
    img = img + 0.07 * F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    both = (objects >= 0).all(dim=1)
    for slot in range(2):
        q = p[:, 20 + 10 * slot: 30 + 10 * slot].clone()
        cls = objects[:, slot]
        cx = torch.where(both, (q[:, 8] * 0.2 + 0.4) * (1 if slot else -1), q[:, 8] * 0.7 - 0.35)
        q[:, 1] = torch.where(both, torch.full_like(q[:, 1], -0.6), q[:, 1])  # a pair: radius 0.23 each
        sel = (cls >= 0).nonzero().flatten()
        if sel.numel():
            mask, colour = _object(q[sel, :8], cls[sel], cx[sel], size)
            img[sel] = img[sel] * (1 - mask) + colour * mask
    return (img + 0.035 * noise).clamp(0, 1)


def _luma(img: Tensor) -> Tensor:
    return (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]).unsqueeze(1)


def _cells(size: int, cell: int, jitter: Tensor) -> tuple[Tensor, Tensor]:
    """Jittered grid: each pixel's cell centre ``(N, S, S)`` (x and y in pixels) from ``jitter`` ``(N, G, G, 2)``."""
    g = jitter.shape[1]
    idx = torch.arange(size) // cell
    idx = idx.clamp(max=g - 1)
    iy, ix = torch.meshgrid(idx, idx, indexing="ij")
    j = jitter[:, iy, ix]  # (N, S, S, 2)
    cx = (ix.float() + 0.5) * cell + (j[..., 0] - 0.5) * cell * 0.6
    cy = (iy.float() + 0.5) * cell + (j[..., 1] - 0.5) * cell * 0.6
    return cx, cy


def _sample(img: Tensor, cx: Tensor, cy: Tensor) -> Tensor:
    """Colour of ``img`` at pixel positions ``(cx, cy)`` ``(N, S, S)``, nearest pixel: ``(N, 3, S, S)``."""
    s = img.shape[-1]
    ix = cx.round().long().clamp(0, s - 1)
    iy = cy.round().long().clamp(0, s - 1)
    flat = (iy * s + ix).flatten(1)  # (N, S*S)
    out = img.flatten(2).gather(2, flat.unsqueeze(1).expand(-1, 3, -1))
    return out.view_as(img)


def _pointillism(img: Tensor, p: Tensor, jitter: Tensor) -> Tensor:
    s = img.shape[-1]
    cx, cy = _cells(s, 3, jitter)
    px = torch.arange(s).float() + 0.5
    d = torch.sqrt((px.view(1, 1, s) - cx) ** 2 + (px.view(1, s, 1) - cy) ** 2)
    dot = torch.sigmoid((1.35 - d) * 4).unsqueeze(1)
    colour = _sample(img, cx, cy)
    grey = colour.mean(1, keepdim=True)
    colour = (grey + 1.6 * (colour - grey)).clamp(0, 1)  # divisionists used pure, saturated colour
    paper = (0.85 + 0.12 * p[:, :3]).view(-1, 3, 1, 1)
    return paper * (1 - dot) + colour * dot


def _hatching(img: Tensor, p: Tensor) -> Tensor:
    s = img.shape[-1]
    x, y = grid(s)
    lum = _luma(img)
    a = (0.15 + 0.2 * p[:, 0]) * math.pi
    period = 2.4 + 1.2 * p[:, 1]
    out = torch.zeros_like(lum)
    for k, angle in enumerate((a, a + math.pi / 2)):
        proj = (x * torch.cos(angle).view(-1, 1, 1) + y * torch.sin(angle).view(-1, 1, 1)) * s / 2
        wave = torch.cos(2 * math.pi * proj / period.view(-1, 1, 1)).unsqueeze(1)
        level = (0.75 - lum) * 2 if k == 0 else (0.4 - lum) * 2  # cross-hatch only the darkest tones
        out = torch.maximum(out, torch.sigmoid((wave - 1 + level.clamp(min=0) * 1.4) * 6))
    ink = 0.5 * (0.1 + 0.25 * p[:, 2:5]).view(-1, 3, 1, 1) + 0.5 * 0.75 * img  # coloured inks follow the scene
    paper = (0.86 + 0.12 * p[:, 5:8]).view(-1, 3, 1, 1)
    return paper * (1 - out) + ink * out


def _colour_field(img: Tensor, p: Tensor) -> Tensor:
    s = img.shape[-1]
    soft = F.avg_pool2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    lum = _luma(soft)
    levels = 3
    t = (lum - lum.amin(dim=(2, 3), keepdim=True)) / (lum.amax(dim=(2, 3), keepdim=True) - lum.amin(
        dim=(2, 3), keepdim=True) + 1e-6)
    band = (t * levels).floor().clamp(max=levels - 1)  # (N, 1, S, S)
    palette = (0.1 + 0.85 * p[:, : 3 * levels]).view(-1, levels, 3)
    mean_col = soft.mean(dim=(2, 3))  # keep a hint of the scene's colours
    palette = 0.7 * palette + 0.3 * mean_col.unsqueeze(1)
    col = palette.gather(1, band.long().view(-1, s * s, 1).expand(-1, -1, 3))  # (N, S*S, 3)
    flat = (soft * 2).round() / 2  # the scene's own colours, posterised to flat areas
    return 0.6 * col.view(-1, s, s, 3).permute(0, 3, 1, 2) + 0.4 * flat


def _shift(img: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """``img`` ``(N, C, S, S)`` sampled at (x + dx, y + dy) pixels, per image ``dx, dy`` ``(N,)``; edges repeat."""
    s = img.shape[-1]
    x, y = grid(s)
    g = torch.stack([x + (dx * 2 / s).view(-1, 1, 1), y + (dy * 2 / s).view(-1, 1, 1)], dim=-1)
    return F.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=False)


def _brush(img: Tensor, p: Tensor, noise: Tensor) -> Tensor:
    angle = p[:, 0] * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    length = 3
    both = torch.cat([img, noise[:, :1]], dim=1)
    acc = torch.zeros_like(both)
    for t in range(-length, length + 1):  # average colour and canvas texture along each image's stroke direction
        acc += _shift(both, t * cos, t * sin)
    acc /= 2 * length + 1
    tint = (p[:, 1:4] - 0.5).view(-1, 3, 1, 1) * 0.25
    return (acc[:, :3] + tint + 0.4 * acc[:, 3:]).clamp(0, 1)


def _mosaic(img: Tensor, p: Tensor) -> Tensor:
    s = img.shape[-1]
    cell = 4
    centre = (torch.arange(s) // cell).float() * cell + cell / 2
    cx, cy = centre.view(1, 1, s).expand(img.shape[0], s, s), centre.view(1, s, 1).expand(img.shape[0], s, s)
    colour = (_sample(img, cx, cy) * 5).round() / 5  # glazed tiles in a few tones
    colour = 0.85 * colour + 0.15 * p[:, 1:4].view(-1, 3, 1, 1)
    line = (torch.arange(s) % cell) == 0
    grout = (line.view(1, s) | line.view(s, 1)).float().view(1, 1, s, s)
    grout_col = (0.3 + 0.4 * p[:, :1]).view(-1, 1, 1, 1)
    return colour * (1 - grout) + grout_col * grout


def paint(img: Tensor, style: Tensor, p: Tensor, jitter: Tensor, noise: Tensor) -> Tensor:
    """Render scenes in painting styles.

    Args:
        img: ``(N, 3, S, S)`` scenes in ``[0, 1]``.
        style: ``(N,)`` index into :data:`STYLES`.
        p: ``(N, 16)`` uniforms for style parameters.
        jitter: ``(N, G, G, 2)`` uniforms for jittered cells (``G ≥ S/3``).
        noise: ``(N, 3, S, S)`` standard normal texture noise.

    Returns:
        ``(N, 3, S, S)`` paintings in ``[0, 1]``.
    """
    out = torch.empty_like(img)
    for k, fn in enumerate((_pointillism, _hatching, _colour_field, _brush, _mosaic)):
        sel = (style == k).nonzero().flatten()
        if sel.numel() == 0:
            continue
        if fn is _pointillism:
            out[sel] = fn(img[sel], p[sel], jitter[sel])
        elif fn is _brush:
            out[sel] = fn(img[sel], p[sel], noise[sel])
        else:
            out[sel] = fn(img[sel], p[sel])  # type: ignore[operator]
    return out.clamp(0, 1)

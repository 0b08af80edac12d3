"""What the Stats node shows: the statistics as a table and as a labelled bar chart (one
bar per tier: name, bytes used of its capacity, device, a title), or, without the shim, an
image that says so. The chart's text is ASCII: Pillow's default font has no more. Images are H x W x 3 float arrays in [0, 1], ComfyUI's IMAGE layout."""
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH = 640
BACKGROUND = (32, 33, 36)
TEXT = (232, 234, 237)
DIM = (154, 160, 166)
TRACK = (60, 64, 67)
COLOURS = {"local": (76, 175, 80), "host": (66, 133, 244)}
PEER = (251, 140, 0)


def size(n):
    """Bytes in binary units, as vvram's sizes are."""
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return f"{n / unit:.2f} {name}"
    return f"{n} B"


def tier_label(device, tier):
    """A tier's name for people: the card, a peer card or host RAM."""
    if tier == "local":
        return f"cuda:{device} (this card)"
    if tier == "host":
        return "host RAM (pinned)"
    if tier.startswith("peer:"):
        return f"cuda:{tier[5:]} (peer card)"
    return tier


def render_table(stats):
    """The statistics as a readable table."""
    lines = [f"vvram {stats['version']} — policy {stats.get('policy') or 'none'}, phase {stats.get('phase') or 'none'}"]
    if stats.get("policy_error"):
        lines.append(f"the policy does not fit this machine, placement is off: {stats['policy_error']}")
    elif not stats.get("active"):
        lines.append("placement not active yet (no CUDA use so far, or no policy)")
    for device in stats["devices"]:
        lines.append(f"cuda:{device['device']}: the application sees {size(device['reported_total'])}, {device['allocations']} live allocations")
        for tier in device["tiers"]:
            share = 100.0 * tier["used"] / tier["capacity"] if tier["capacity"] else 0.0
            lines.append(f"  {tier_label(device['device'], tier['tier']):<20} {size(tier['used']):>11} of {size(tier['capacity']):>11}  {share:5.1f}%")
    lines.append(
        f"allocations {stats['allocations']}, freed {stats['frees']}, out of memory {stats['out_of_memory']}, "
        f"CPU-copied to host tier {size(stats['fast_h2d_bytes'])}, host pool {size(stats['host_pool_bytes'])}, errors {stats['errors']}"
    )
    return "\n".join(lines)


def _font(pixels):
    try:
        return ImageFont.load_default(size=pixels)
    except TypeError:  # Pillow before 10.1: one bitmap size
        return ImageFont.load_default()


def _array(image):
    return np.asarray(image, dtype=np.float32) / 255.0


class Text:
    """A line of the chart: where, what, how big; `right` aligns its end at x."""

    def __init__(self, x, y, text, pixels, colour, right=False):
        self.x, self.y, self.text, self.pixels, self.colour, self.right = x, y, text, pixels, colour, right


class Bar:
    """A tier's bar: its track across the chart, filled to `fraction` in `colour`."""

    def __init__(self, y, fraction, colour):
        self.y, self.fraction, self.colour = y, fraction, colour


def chart_layout(stats):
    """What the chart shows, in drawing order, and its height: a title with the policy,
    the phase, per device what the application sees, and per tier its name, a bar and
    `USED of CAPACITY (PERCENT)`; counters at the foot."""
    items = [
        Text(16, 12, f"vvram: where memory lives (policy {stats.get('policy') or 'none'})", 18, TEXT),
        Text(16, 36, f"phase {stats.get('phase') or 'none'}", 12, DIM),
    ]
    y = 56
    if not stats["devices"]:
        why = stats.get("policy_error") or "no device under a policy yet: placement starts at the first CUDA use"
        for line in textwrap.wrap(why, 80):
            items.append(Text(16, y, line, 14, TEXT))
            y += 18
    for device in stats["devices"]:
        items.append(Text(16, y + 8, f"cuda:{device['device']}: the application sees {size(device['reported_total'])}", 14, TEXT))
        y += 34
        for tier in device["tiers"]:
            used, capacity = tier["used"], tier["capacity"]
            fraction = min(1.0, used / capacity) if capacity else 0.0
            items.append(Text(16, y, tier_label(device["device"], tier["tier"]), 12, DIM))
            items.append(Text(WIDTH - 16, y, f"{size(used)} of {size(capacity)} ({100 * fraction:.0f}%)", 12, TEXT, right=True))
            items.append(Bar(y + 18, fraction, COLOURS.get(tier["tier"], PEER)))
            y += 44
    items.append(Text(16, y + 6, f"allocations {stats['allocations']}  out of memory {stats['out_of_memory']}  errors {stats['errors']}", 12, DIM))
    return items, y + 30


def render_chart(stats):
    """The chart of `chart_layout` as an image."""
    items, height = chart_layout(stats)
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for item in items:
        if isinstance(item, Bar):
            draw.rectangle((16, item.y, WIDTH - 16, item.y + 16), fill=TRACK)
            if item.fraction > 0:
                draw.rectangle((16, item.y, 16 + max(1, int((WIDTH - 32) * item.fraction)), item.y + 16), fill=item.colour)
        else:
            font = _font(item.pixels)
            x = item.x - draw.textlength(item.text, font=font) if item.right else item.x
            draw.text((x, item.y), item.text, font=font, fill=item.colour)
    return _array(image)


def render_message(title, message):
    """An image that says why there is no chart (e.g. vvram is not loaded)."""
    heading, body = _font(18), _font(13)
    lines = [line for paragraph in message.splitlines() for line in (textwrap.wrap(paragraph, 88) or [""])]
    image = Image.new("RGB", (WIDTH + 120, 56 + 17 * len(lines) + 12), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((16, 12), title, font=heading, fill=TEXT)
    for row, line in enumerate(lines):
        draw.text((16, 48 + 17 * row), line, font=body, fill=DIM)
    return _array(image)

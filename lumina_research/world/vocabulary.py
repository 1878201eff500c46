"""The shape world's words: shapes, object colours, backgrounds and motions.

Their own module because the renderer and the captions both need them (and the renderer captions its clips).
"""

SHAPES = ("circle", "square", "triangle", "star")

# Bright, mutually distant object colours; every one is at least ~37 grey levels away
# from every background so that motion stays visible to grayscale optical flow.
COLORS = {
    "red": (240, 50, 50),
    "green": (50, 210, 70),
    "blue": (50, 110, 250),
    "yellow": (250, 230, 40),
    "purple": (170, 80, 230),
    "orange": (255, 140, 20),
    "white": (250, 250, 250),
    "cyan": (40, 220, 230),
    "pink": (255, 130, 190),
}

# Dark backgrounds, disjoint from the object palette (RGB distance >= 138 to any object).
BACKGROUNDS = {
    "black": (0, 0, 0),
    "gray": (70, 70, 70),
    "navy": (10, 20, 90),
    "dark green": (10, 75, 30),
    "maroon": (110, 10, 25),
    "brown": (95, 60, 20),
}

MOTIONS = ("left", "right", "up", "down", "diagonal", "bouncing", "still")

"""CarRacing-v3 with the stock state pixels, drawn several times faster.

Stock CarRacing spends ~97% of a step drawing the 96x96 state image: every frame it transforms
and culls ~700 track and grass polygons one by one in Python (docs/design.md, Costs). This subclass
keeps every draw call and its float inputs exactly as stock, but transforms and culls all
polygons with numpy in bulk, skips draw calls that cannot touch the canvas, replaces the
background polygon by a fill when it covers the canvas, reuses surfaces and the score font.
``skip_render`` lets the action-repeat wrapper skip the frames it discards.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import pygame
from gymnasium.envs.box2d import car_racing
from gymnasium.envs.box2d.car_racing import (
    GRASS_DIM,
    MAX_SHAPE_DIM,
    PLAYFIELD,
    SCALE,
    STATE_H,
    STATE_W,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
)
from pygame import gfxdraw

_FIELD = np.array(
    [
        [
            (PLAYFIELD, PLAYFIELD),
            (PLAYFIELD, -PLAYFIELD),
            (-PLAYFIELD, -PLAYFIELD),
            (-PLAYFIELD, PLAYFIELD),
        ]
    ]
)
_GRASS = np.array(
    [
        [
            (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + 0),
            (GRASS_DIM * x + 0, GRASS_DIM * y + 0),
            (GRASS_DIM * x + 0, GRASS_DIM * y + GRASS_DIM),
            (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + GRASS_DIM),
        ]
        for x in range(-20, 20, 2)
        for y in range(-20, 20, 2)
    ]
)
_NUM_GRASS = len(_GRASS)
# gfxdraw truncates vertices to integers and paints only inside their bounding box (anti-aliased
# edges reach one pixel further), so a polygon entirely beyond this margin is a no-op to skip.
_NOOP_MARGIN = 2.0
# Pixels between the canvas and the background square's edges for one fill to replace its draw.
_COVER_MARGIN = 4.0


class FastCarRacing(car_racing.CarRacing):
    """CarRacing-v3 whose observations are byte-identical to stock, rendered several times faster.

    Set ``skip_render = True`` to step physics, reward and termination exactly as stock without
    drawing: ``step`` then returns the previous observation array object. ``render_state()``
    returns the observation stock would have returned for the last step, drawing it if that
    frame was skipped (e.g. when an episode ends on a skipped frame).
    """

    def __init__(
        self,
        render_mode: str | None = None,
        verbose: bool = False,
        lap_complete_percent: float = 0.95,
        domain_randomize: bool = False,
        continuous: bool = True,
    ) -> None:
        super().__init__(render_mode, verbose, lap_complete_percent, domain_randomize, continuous)
        self.skip_render = False
        self._road_source: list | None = None
        self._vx = self._vy = np.empty((4, 0))
        self._canvas: pygame.Surface | None = None
        self._flipped: pygame.Surface | None = None
        self._state_surf: pygame.Surface | None = None
        self._font: pygame.font.Font | None = None
        self._skipped_score: float | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Stock reset; the first observation is always drawn, whatever ``skip_render`` says."""
        skip, self.skip_render = self.skip_render, False
        try:
            return super().reset(seed=seed, options=options)
        finally:
            self.skip_render = skip

    def render_state(self) -> np.ndarray:
        """The last step's observation as stock draws it; kept as ``state``, drawn if skipped."""
        if self._skipped_score is not None:
            self.state = self._render_state_pixels(self._skipped_score)
        return self.state

    def _render(self, mode: str):
        if mode != "state_pixels" or "t" not in self.__dict__:
            return super()._render(mode)
        if self.skip_render:
            # Stock draws before this frame's -0.1 reaches self.reward; the status bar shows it.
            self._skipped_score = self.reward
            return self.state
        return self._render_state_pixels(self.reward)

    def _render_state_pixels(self, score: float) -> np.ndarray:
        self._skipped_score = None
        # Same float operations, in the same order, as CarRacing._render; pixels depend on them.
        angle = -self.car.hull.angle
        zoom = 0.1 * SCALE * max(1 - self.t, 0) + ZOOM * SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (WINDOW_W / 2 + trans[0], WINDOW_H / 4 + trans[1])

        if self._canvas is None:
            self._canvas = pygame.Surface((WINDOW_W, WINDOW_H))
            self._flipped = pygame.Surface((WINDOW_W, WINDOW_H), 0, self._canvas)
            self._state_surf = pygame.Surface((STATE_W, STATE_H), 0, self._canvas)
        self._draw_world(self._canvas, zoom, trans, angle)
        self.car.draw(self._canvas, zoom, trans, angle, False)

        _flip_rows(self._canvas, self._flipped)
        self.surf = self._flipped
        self._render_indicators(WINDOW_W, WINDOW_H)
        text = self._score_text(f"{score:04.0f}")
        text_rect = text.get_rect()
        text_rect.center = (60, WINDOW_H - WINDOW_H * 2.5 / 40.0)
        self.surf.blit(text, text_rect)

        pygame.transform.smoothscale(self.surf, (STATE_W, STATE_H), self._state_surf)
        return np.transpose(np.array(pygame.surfarray.pixels3d(self._state_surf)), axes=(1, 0, 2))

    def _score_text(self, label: str) -> pygame.Surface:
        # Stock loads a fresh font every frame, which re-rasterizes every glyph; a kept font
        # caches them. pygame.quit() (any env's close) invalidates it, so rebuild on error.
        if self._font is not None:
            try:
                return self._font.render(label, True, (255, 255, 255), (0, 0, 0))
            except pygame.error:
                pass
        pygame.font.init()
        self._font = pygame.font.Font(pygame.font.get_default_font(), 42)
        return self._font.render(label, True, (255, 255, 255), (0, 0, 0))

    def _draw_world(self, surf: pygame.Surface, zoom: float, trans: tuple, angle: float) -> None:
        if self._road_source is not self.road_poly:
            self._road_source = self.road_poly
            road = np.array([poly for poly, _ in self.road_poly], dtype=np.float64)
            verts = np.concatenate([_FIELD, _GRASS, road.reshape(-1, 4, 2)])
            # Vertex-major (4, polygons): per-polygon min/max become 3 elementwise ops on rows.
            self._vx, self._vy = np.ascontiguousarray(verts.transpose(2, 1, 0))
        # Vector2(1, 0).rotate_rad yields exactly the (cos, sin) pair of pygame's rotation,
        # including its special cases at multiples of pi/2.
        cos, sin = pygame.math.Vector2(1.0, 0.0).rotate_rad(angle)
        sx = (cos * self._vx - sin * self._vy) * zoom + trans[0]
        sy = (sin * self._vx + cos * self._vy) * zoom + trans[1]

        if _covers_canvas(cos, sin, zoom, trans):
            surf.fill(self.bg_color)
        else:
            field = list(zip(sx[:, 0].tolist(), sy[:, 0].tolist(), strict=True))
            surf.fill((0, 0, 0))
            gfxdraw.aapolygon(surf, field, self.bg_color)
            gfxdraw.filled_polygon(surf, field, self.bg_color)

        visible = np.flatnonzero(_visible(sx[:, 1:], sy[:, 1:])) + 1
        polys = np.stack([sx[:, visible].T, sy[:, visible].T], axis=-1).tolist()
        for i, poly in zip(visible.tolist(), polys, strict=True):
            if i <= _NUM_GRASS:
                color = self.grass_color
            else:
                color = [int(c) for c in self.road_poly[i - 1 - _NUM_GRASS][1]]
            gfxdraw.aapolygon(surf, poly, color)
            gfxdraw.filled_polygon(surf, poly, color)


def _flip_rows(src: pygame.Surface, dst: pygame.Surface) -> None:
    """``pygame.transform.flip(src, False, True)`` into a kept surface: no 3 MB alloc per frame."""
    # The pixel views lock both surfaces until they die at return.
    pygame.surfarray.pixels2d(dst)[...] = pygame.surfarray.pixels2d(src)[:, ::-1]


def _covers_canvas(cos: float, sin: float, zoom: float, trans: tuple) -> bool:
    """Whether the background square covers the canvas with all its edges off-canvas."""
    m = _COVER_MARGIN
    limit = PLAYFIELD - m / zoom
    for cx in (-m, WINDOW_W + m):
        for cy in (-m, WINDOW_H + m):
            # The canvas corner back in world units; the square spans +-PLAYFIELD.
            dx, dy = cx - trans[0], cy - trans[1]
            if abs(cos * dx + sin * dy) / zoom >= limit or abs(cos * dy - sin * dx) / zoom >= limit:
                return False
    return True


def _visible(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stock's culling test (a vertex in the padded window) minus draws that paint nothing.

    ``x`` and ``y`` are (4, polygons) screen coordinates.
    """
    pad = MAX_SHAPE_DIM
    stock = ((-pad <= x) & (x <= WINDOW_W + pad) & (-pad <= y) & (y <= WINDOW_H + pad)).any(0)
    m = _NOOP_MARGIN
    touches = (
        (x.max(0) >= -m)
        & (x.min(0) <= WINDOW_W + m)
        & (y.max(0) >= -m)
        & (y.min(0) <= WINDOW_H + m)
    )
    return stock & touches


def make_car_racing(fast_render: bool = True, **kwargs: Any) -> gym.Env:
    """``gym.make("CarRacing-v3", **kwargs)``, with FastCarRacing inside when ``fast_render``."""
    spec = gym.spec("CarRacing-v3")
    if fast_render:
        spec = dataclasses.replace(spec, entry_point=FastCarRacing)
    return gym.make(spec, **kwargs)

"""A scripted CarRacing-v3 driver that reads the track geometry: demonstrations without a person.

`Autopilot.act(env.unwrapped)` looks at the car (hull position, angle, velocity) and the track's
centre line (`env.unwrapped.track`, a loop of (alpha, beta, x, y) points 3.5 units apart, in
driving order) and returns CarRacing's raw (steer, gas, brake):

- steering is pure pursuit: aim at the centre-line point a look-ahead distance ahead of the car's
  nearest point, the look-ahead growing with speed; the wheel angle is the one whose circular arc
  reaches that point, less a yaw damping term where the car turns faster than that arc (a slide);
- speed control keeps the speed under what every upcoming bend allows (a lateral acceleration
  limit on the centre line's curvature), and under what braking can still bring down to that in
  the distance left; it brakes (below the 0.9 that locks the wheels) when over that speed;
- gas grows with the shortfall from the planned speed, and traction control and ABS guard it:
  CarRacing's tyres share one friction limit between driving and cornering, so full gas spins
  the rear wheels and the car spins out. Gas is cut while the rear wheels turn faster than the
  ground, the brake while they turn much slower. Either guard alone is enough on tracks 0..9;
  with neither (full gas, no traction control) 2 of those 10 laps were not completed.

Tuned on tracks 20..39, it completes the lap on tracks 0..9 with a mean return of 914.5 (README).

The controller holds no randomness; its only state is the nearest track index, searched in a
window around the last one so that a part of the loop passing close by is not mistaken for the
car's. `to_agent` maps a raw action onto the agent's [-1, 1] actions, as `keys_to_action`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

RAW_LOW = np.array([-1.0, 0.0, 0.0])
"""Lower bounds of CarRacing-v3's steer, gas, brake; the agent's -1 maps here."""
RAW_HIGH = np.array([1.0, 1.0, 1.0])
"""Upper bounds of CarRacing-v3's steer, gas, brake; the agent's +1 maps here."""
WHEELBASE = 3.24
"""Distance between the car's front and rear axles (car_dynamics: wheels at y = +80, -82 x 0.02)."""


def to_agent(raw: np.ndarray) -> np.ndarray:
    """Agent action in [-1, 1]^3 that the env's RescaleAction maps onto raw (steer, gas, brake)."""
    raw = np.clip(np.asarray(raw, dtype=np.float64), RAW_LOW, RAW_HIGH)
    return np.clip(2.0 * (raw - RAW_LOW) / (RAW_HIGH - RAW_LOW) - 1.0, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class AutopilotParams:
    """Gains of the scripted driver (units: track units, seconds)."""

    lookahead_base: float = 6.0
    """Look-ahead distance at standstill."""
    lookahead_per_speed: float = 0.25
    """Extra look-ahead per unit/s of speed."""
    steer_gain: float = 1.0
    """Multiplies the pure-pursuit wheel angle (radians) before it becomes the steer command."""
    max_speed: float = 110.0
    """Speed never aimed above."""
    lateral_accel: float = 160.0
    """Lateral acceleration allowed in bends: the speed limit there is sqrt(this / curvature)."""
    brake_decel: float = 60.0
    """Deceleration assumed when planning to slow for a bend ahead."""
    preview: float = 80.0
    """Centre line looked along for bends, beyond the braking distance."""
    brake: float = 0.8
    """Largest brake applied when over the planned speed (0.9 and above lock the wheels)."""
    speed_band: float = 3.0
    """Over the planned speed by more than this: brake; within it: coast."""
    gas_gain: float = 0.1
    """Gas per unit/s below the planned speed."""
    max_slip: float = 4.0
    """Traction control and ABS: rear wheel slip (units/s) above which gas or brake is cut."""
    yaw_damping: float = 0.05
    """Wheel angle (radians) taken off per rad/s of yaw rate beyond the arc's."""


class Autopilot:
    """Pure pursuit on CarRacing's centre line with curvature-aware speed control."""

    def __init__(self, params: AutopilotParams | None = None):
        self.params = params or AutopilotParams()
        self._track: Any = None
        self._points = np.zeros((0, 2))
        self._seg = np.zeros(0)
        self._curvature = np.zeros(0)
        self._nearest = 0

    def _load(self, track: Any) -> None:
        """Precompute positions, segment lengths and curvature of a new track's centre line."""
        pts = np.array([(p[2], p[3]) for p in track], dtype=np.float64)
        seg = np.roll(pts, -1, axis=0) - pts
        length = np.linalg.norm(seg, axis=1)
        heading = np.arctan2(seg[:, 1], seg[:, 0])
        turn = (np.roll(heading, -1) - heading + np.pi) % (2 * np.pi) - np.pi
        curv = np.abs(turn) / np.maximum(length, 1e-6)
        # Smooth over +-2 points: a bend's curvature, not one polygon joint's.
        kernel = np.ones(5) / 5
        padded = np.concatenate([curv[-2:], curv, curv[:2]])
        self._curvature = np.convolve(padded, kernel, mode="valid")
        self._points = pts
        self._seg = length
        self._track = track
        self._nearest = 0

    def reset(self) -> None:
        """Forget the track; the next `act` loads whatever track the env holds."""
        self._track = None

    def _find_nearest(self, pos: np.ndarray) -> int:
        n = len(self._points)
        idx = (self._nearest + np.arange(-5, 40)) % n
        d = np.linalg.norm(self._points[idx] - pos, axis=1)
        best = int(idx[np.argmin(d)])
        if d.min() > 20.0:
            # Lost (far off the road): search the whole loop.
            best = int(np.argmin(np.linalg.norm(self._points - pos, axis=1)))
        self._nearest = best
        return best

    def act(self, env: Any) -> np.ndarray:
        """Raw (steer, gas, brake) for the car of unwrapped CarRacing `env` in its current state."""
        p = self.params
        if env.track is not self._track:
            self._load(env.track)
        hull = env.car.hull
        pos = np.array([hull.position[0], hull.position[1]])
        vel = np.array([hull.linearVelocity[0], hull.linearVelocity[1]])
        speed = float(np.linalg.norm(vel))
        theta = float(hull.angle)
        forward = np.array([-math.sin(theta), math.cos(theta)])
        left = np.array([-math.cos(theta), -math.sin(theta)])
        n = len(self._points)
        i0 = self._find_nearest(pos)

        # Steering: pure pursuit towards the look-ahead point.
        lookahead = p.lookahead_base + p.lookahead_per_speed * speed
        i, dist = i0, 0.0
        while dist < lookahead:
            dist += self._seg[i]
            i = (i + 1) % n
        d = self._points[i] - pos
        ahead, lateral = float(d @ forward), float(d @ left)
        reach2 = ahead * ahead + lateral * lateral
        arc = 2.0 * lateral / max(reach2, 1e-6)
        wheel = math.atan(WHEELBASE * arc)
        # Damp the yaw: steer against turning faster than the arc asks (a slide, a spin).
        wheel -= p.yaw_damping * (float(hull.angularVelocity) - speed * arc)
        if ahead < 0:
            # Target behind: turn hard towards it.
            wheel = math.copysign(1.0, lateral)
        steer = float(np.clip(p.steer_gain * -wheel, -1.0, 1.0))

        # Speed: the lowest limit set by any bend within braking reach.
        horizon = speed * speed / (2 * p.brake_decel) + p.preview
        target = p.max_speed
        j, dist = i0, 0.0
        while dist < horizon:
            bend = math.sqrt(p.lateral_accel / max(self._curvature[j], 1e-6))
            target = min(target, math.sqrt(bend * bend + 2 * p.brake_decel * dist))
            dist += self._seg[j]
            j = (j + 1) % n
        slip = self._rear_slip(env.car)
        gas = brake = 0.0
        if speed > target + p.speed_band:
            # ABS: no brake while the wheels already turn slower than the ground goes by.
            brake = p.brake if slip > -p.max_slip else 0.0
        elif speed < target:
            gas = min(1.0, p.gas_gain * (target - speed))
            # Traction control: a spinning rear wheel loses its side grip.
            if slip > p.max_slip:
                gas = 0.0
        return np.array([steer, gas, brake])

    @staticmethod
    def _rear_slip(car: Any) -> float:
        """Mean of the rear wheels' rim speed minus their forward ground speed (units/s)."""
        total = 0.0
        for w in car.wheels[2:4]:
            forw = w.GetWorldVector((0, 1))
            v = w.linearVelocity
            total += w.omega * w.wheel_rad - (forw[0] * v[0] + forw[1] * v[1])
        return total / 2

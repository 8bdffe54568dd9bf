"""Leaderboards built only from run artifacts, self-checked before anything is written."""

from adzoo.leaderboard.build import build_leaderboard
from adzoo.leaderboard.collect import LeaderboardError, Row, Run, aggregate, collect

__all__ = ["LeaderboardError", "Row", "Run", "aggregate", "build_leaderboard", "collect"]

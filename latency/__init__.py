"""Latency lookup tables and predictors, built on devices/ measurements.

``enumerate_blocks`` lists a space's distinct blocks, ``profile_blocks`` measures them on a
device into a ``LatencyTable`` (lut.json), ``LutSumPredictor`` sums a subnet's entries and
``calibrate`` corrects that sum with subnets measured end to end; ``profile_device`` does all
of it for one device and ``profile_fleet`` for several at once. ``costs_many`` gives the
analytic proxies (MACs, parameters, peak activation memory).
"""

from __future__ import annotations

from latency.blocks import BlockIndex, BlockSpec, enumerate_blocks, subnet_blocks
from latency.end_to_end import MeasuredSubnets, random_subnets, table_subnets
from latency.fleet import DeviceResult, FleetJob, ProfileOptions, profile_device, profile_fleet
from latency.metrics import validation_figures
from latency.model_cache import ModelCache
from latency.plots import scatter_plot
from latency.predictors import (
    CalibratedPredictor,
    LatencyPredictor,
    LutSumPredictor,
    calibrate,
    load_predictor,
)
from latency.profiler import ProfileSettings, profile_blocks, settings_for
from latency.proxies import block_costs, costs_many, subnet_costs
from latency.table import LatencyTable, TableError, TableHeader

__all__ = [
    "BlockIndex",
    "BlockSpec",
    "CalibratedPredictor",
    "DeviceResult",
    "FleetJob",
    "LatencyPredictor",
    "LatencyTable",
    "LutSumPredictor",
    "MeasuredSubnets",
    "ModelCache",
    "ProfileOptions",
    "ProfileSettings",
    "TableError",
    "TableHeader",
    "block_costs",
    "calibrate",
    "costs_many",
    "enumerate_blocks",
    "load_predictor",
    "profile_blocks",
    "profile_device",
    "profile_fleet",
    "random_subnets",
    "scatter_plot",
    "settings_for",
    "subnet_blocks",
    "subnet_costs",
    "table_subnets",
    "validation_figures",
]

"""Capacity management: grid, forecast, allocation, power flow, planner, compliance."""

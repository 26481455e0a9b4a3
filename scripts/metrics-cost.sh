#!/usr/bin/env bash
# What tessera's metrics cost a request (BENCHMARKS.md, "What metrics cost"): the release axum
# demo without ADMIN_TOKEN (no recorder installed: every metrics call is a no-op) and with it
# (the Prometheus exporter installed, every metric recorded), in turn (scripts/demo-ab.sh:
# `POST /counter` and `GET /me` from 32 connections, with the demo's CPU per request).
#
#   scripts/metrics-cost.sh [ROUNDS] [SECS]        defaults: 3 rounds x 5 s
AB_VAR=ADMIN_TOKEN AB_A= AB_B=bench-admin-token exec bash "$(dirname "$0")/demo-ab.sh" "$@"

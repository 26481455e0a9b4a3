#!/usr/bin/env bash
# What `RedisOptions::replica_acks(1)` costs a write (BENCHMARKS.md, "Replica acknowledgments"):
# one primary and its replica (Redis 7, loopback), the release axum demo on it with
# REPLICA_ACKS=0 and =1 in turn (scripts/demo-ab.sh: `POST /counter`, a script write followed
# with acks by a `WAIT 1`, and `GET /me`, a read without `WAIT`, from 32 connections).
#
#   scripts/replica-acks-cost.sh [ROUNDS] [SECS]        defaults: 3 rounds x 5 s
AB_VAR=REPLICA_ACKS AB_A=0 AB_B=1 AB_REPLICA=1 exec bash "$(dirname "$0")/demo-ab.sh" "$@"

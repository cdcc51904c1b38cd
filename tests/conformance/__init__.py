"""Tests of the conformance suite (conformance/)."""

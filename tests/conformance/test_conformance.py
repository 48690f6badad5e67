"""The cross-core contract: every check over every cell of the matrix.

Each test runs one ``check_*`` from checks.py over (core, mode, transport);
see conftest.py for the matrix and harness.py for the pair factory.
"""

from __future__ import annotations

from tests.conformance import checks
from tests.conformance.harness import Endpoints


def test_handshake(ends: Endpoints) -> None:
    checks.check_handshake(ends)


def test_event_timeout_and_handle_events(ends: Endpoints) -> None:
    checks.check_event_timeout_and_handle_events(ends)


def test_net_write_desired_follows_backpressure(ends: Endpoints) -> None:
    checks.check_net_write_desired_follows_backpressure(ends)


def test_retransmission_at_the_loss_deadline(ends: Endpoints) -> None:
    checks.check_retransmission_at_the_loss_deadline(ends)


def test_default_stream(ends: Endpoints) -> None:
    checks.check_default_stream(ends)


def test_multistream_open_and_accept(ends: Endpoints) -> None:
    checks.check_multistream_open_and_accept(ends)


def test_stream_states_through_fin_and_reset(ends: Endpoints) -> None:
    checks.check_stream_states_through_fin_and_reset(ends)


def test_stop_sending(ends: Endpoints) -> None:
    checks.check_stop_sending(ends)


def test_connection_close_ends_streams(ends: Endpoints) -> None:
    checks.check_connection_close_ends_streams(ends)


def test_stream_count_limit(ends: Endpoints) -> None:
    checks.check_stream_count_limit(ends)


def test_read_would_block(ends: Endpoints) -> None:
    checks.check_read_would_block(ends)


def test_write_would_block(ends: Endpoints) -> None:
    checks.check_write_would_block(ends)


def test_flow_control_resumes_when_the_peer_reads(ends: Endpoints) -> None:
    checks.check_flow_control_resumes_when_the_peer_reads(ends)


def test_partial_write_on_the_connection(ends: Endpoints) -> None:
    checks.check_partial_write_on_the_connection(ends)


def test_partial_write_on_a_stream(ends: Endpoints) -> None:
    checks.check_partial_write_on_a_stream(ends)


def test_shutdown(ends: Endpoints) -> None:
    checks.check_shutdown(ends)


def test_shutdown_flushes_a_conclude_made_after_the_data(ends: Endpoints) -> None:
    checks.check_shutdown_flushes_a_conclude_made_after_the_data(ends)


def test_rapid_shutdown(ends: Endpoints) -> None:
    checks.check_rapid_shutdown(ends)


def test_no_block_shutdown_in_explicit_mode_does_not_tick(ends: Endpoints) -> None:
    checks.check_no_block_shutdown_in_explicit_mode_does_not_tick(ends)


def test_idle_timeout(ends: Endpoints) -> None:
    checks.check_idle_timeout(ends)


def test_poll_events(ends: Endpoints) -> None:
    checks.check_poll_events(ends)


def test_key_update(ends: Endpoints) -> None:
    checks.check_key_update(ends)


def test_large_transfer(ends: Endpoints) -> None:
    checks.check_large_transfer(ends)

"""The failover drill (tests/failover_drill.py), shortened, on both event loops.

One SIGKILL of the node that holds the publisher's connection, mid-traffic,
then one of the quorum queue's leader under a publisher on another node. The
full drill (20,000 messages, five kills, each loop) is ``scripts/failover.sh``;
its figures are in RELIABILITY.md.
"""

from __future__ import annotations

from failover_drill import run_drill

from amqpfast.testing import RabbitCluster


async def test_no_confirmed_message_is_lost_when_nodes_die(amqp_cluster: RabbitCluster) -> None:
    result = await run_drill(amqp_cluster, messages=3000, kills=1)
    print(result.summary())  # the figures, for -s

    assert result.kills == 1
    assert result.confirmed >= 3000
    assert result.lost == 0, f"{result.lost} confirmed messages never reached the consumer"
    assert result.left_in_queue == 0  # processed and acked, duplicates too
    # the publisher went on through another node, and the consumer came back
    assert result.moved_to_another_node == 1 and len(result.failover) == 1
    assert result.publisher_reconnects >= 1 and result.consumer_reconnects >= 1
    # every retry was for a reason the at-least-once publisher expects
    assert set(result.retry_reasons) <= {
        "ConnectionClosed",
        "DeliveryError",
        "TimeoutError",
        "ChannelInvalidStateError",
    }, result.retry_reasons
    # the leader's death is a pause for a client connected elsewhere, not a reconnect
    assert result.leader_kill_reconnects == 0
    assert result.leader_kill_longest_pause is not None and result.leader_kill_longest_pause < 15
    assert amqp_cluster.running_nodes() == sorted(node.node for node in amqp_cluster.nodes)

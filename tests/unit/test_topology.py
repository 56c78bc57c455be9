"""The queue topology every process agrees on."""
from shared.contracts.settings import Settings
from shared.contracts.topology import (
    COMPUTE_PROFILES,
    CUSTOMER_STATS,
    ERASE_USER,
    FIT_MODELS,
    MERGE_VISITOR,
    PRUNE_LEDGER,
    RECONCILE_ERASURES,
    RUN_INSIGHT,
    SEND_WELCOME,
    STORE_EVENTS,
    SWEEP_RESCORING,
    USER_CREATED,
    VALIDATE_MODELS,
    build_topology,
)
from shared.infra.celery_app import create_celery_app


def test_every_task_routes_to_a_durable_dead_lettered_queue():
    topology = build_topology("pulse")
    routes = topology.routes()
    assert {USER_CREATED, ERASE_USER, STORE_EVENTS, SEND_WELCOME, PRUNE_LEDGER, COMPUTE_PROFILES, FIT_MODELS,
            SWEEP_RESCORING, CUSTOMER_STATS, RECONCILE_ERASURES, VALIDATE_MODELS, MERGE_VISITOR,
            RUN_INSIGHT} == set(routes)
    queues = {q.name: q for q in topology.work_queues}
    for route in routes.values():
        queue = queues[route["queue"]]
        assert queue.durable
        assert queue.queue_arguments["x-dead-letter-exchange"] == "pulse.dlx"
        assert queue.exchange.name == route["exchange"] == "pulse"
    assert topology.dead_letter.exchange.type == "fanout"


def test_celery_is_configured_for_at_least_once_json_and_confirms():
    app = create_celery_app("t", settings=Settings(broker_url="amqp://x//"))
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.task_acks_on_failure_or_timeout is False
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["confirm_publish"] is True
    assert conf.worker_hijack_root_logger is False
    assert conf.task_default_delivery_mode == "persistent"


def test_quorum_queues_are_declared_quorum_with_a_delivery_limit_and_dead_lettered():
    topology = build_topology("pulse", "quorum")
    for queue in topology.work_queues:
        assert queue.queue_arguments["x-queue-type"] == "quorum"
        assert queue.queue_arguments["x-delivery-limit"] > 0
        assert queue.queue_arguments["x-dead-letter-exchange"] == "pulse.dlx"
    assert topology.dead_letter.queue_arguments == {"x-queue-type": "quorum"}
    # Classic stays argument-free, so queues declared before QUEUE_TYPE existed remain equivalent.
    classic = build_topology("pulse", "classic")
    assert all("x-queue-type" not in q.queue_arguments for q in classic.work_queues)
    assert not classic.dead_letter.queue_arguments

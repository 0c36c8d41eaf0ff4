"""Past one machine: the same app as the ingress of a Ray Serve deployment, one replica per GPU
(or node) of a Ray cluster; Ray routes each request to a replica. Needs ``ray[serve]``.

    from napari_iog.serve.replicas import run_replicas
    run_replicas("iog-pascal-sbd", replicas=4, device="cuda", gpus_per_replica=1, port=8765)

Each replica builds its own predictor (the builder runs on the replica, so no network is
pickled), with its own dynamic batching; the token is checked by every replica.
"""

from __future__ import annotations


def replica_application(model: str | None, device: str, token: str | None, replicas: int,
                        cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0):
    """The Ray Serve application: ``replicas`` copies of the app of :func:`make_app`."""
    from ray import serve

    def build_app():
        from .app import make_app
        from .main import serving_predictor

        # a CPU replica's lanes share the cores Ray gives it, not the whole machine
        predictor, passes = serving_predictor(model, device, cores=max(1, round(cpus_per_replica)))
        return make_app(predictor, token, **passes)

    ingress = serve.ingress(build_app)(type("IOGReplica", (), {"__doc__": "one napari-iog predictor"}))
    options = {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica}
    return serve.deployment(ingress, name="napari-iog", num_replicas=replicas, ray_actor_options=options).bind()


def run_replicas(model: str | None = None, replicas: int = 2, device: str = "auto", token: str | None = None,
                 host: str = "127.0.0.1", port: int = 8765, cpus_per_replica: float = 1.0,
                 gpus_per_replica: float = 0.0, blocking: bool = True):
    """Start Ray Serve on this machine (or the Ray cluster ``ray.init`` reaches) and serve."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    app = replica_application(model, device, token, replicas, cpus_per_replica, gpus_per_replica)
    return serve.run(app, name="napari-iog", route_prefix="/", blocking=blocking)

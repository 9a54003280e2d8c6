from setuptools import find_packages, setup

from link import __version__

setup(
    name="link",
    version=__version__,
    description="Virtual IP manager backed by etcd: one worker process per VIP (LinK is not Keepalived)",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["link", "link.*"]),
    package_data={"link.api": ["openapi.json"]},
    python_requires=">=3.11",
    # Lower bounds are Debian 12's own packages: the .deb runs on those.
    install_requires=[
        "etcd3>=0.12",
        "protobuf>=3.20,<4",
        "grpcio>=1.51",
        "pyroute2>=0.7.2",
        "scapy>=2.5",
        "bottle>=0.12",
        "waitress>=2.1",
        "setproctitle>=1.3",
        "psutil>=5.9",
        "prometheus-client>=0.16",
    ],
    # matplotlib: the benchmarks' plots; pyyaml: the tests of the shipped Prometheus rules;
    # mypy and the stubs of grpcio and waitress: the strict type check of link/ (mypy.ini), pinned
    # so that a new release cannot fail a build of unchanged code.
    extras_require={"test": ["pytest>=7", "schemathesis>=4", "matplotlib>=3.6", "pyyaml>=5.4",
                             "mypy==2.4.1", "types-grpcio==1.85.0.20261028", "types-waitress==3.0.1.20260724"]},
    entry_points={
        "console_scripts": [
            "link-agent=link.agent.link_agent:main",
            "link-client=link.cli.link_client:main",
        ]
    },
)

import pytest

from link.worker.fsm import TRANSITIONS, Event, State, StateMachine, markdown_table, mermaid

# LinK v2's table, written out cell by cell (rows: events, columns: from-states).
EXPECTED = """
elected              ACTIVATED ACTIVATED ACTIVATED FAILING
demoted              STANDBY   STANDBY   STANDBY   FAILING
fault                ACTIVATED ACTIVATED ACTIVATED FAILING
health_check_fail    FAILING   FAILING   FAILING   FAILING
health_check_success BOOTING   STANDBY   ACTIVATED STANDBY
"""
COLUMNS = [State.BOOTING, State.STANDBY, State.ACTIVATED, State.FAILING]
CELLS = [
    (src, Event(line.split()[0]), State(dst))
    for line in EXPECTED.strip().splitlines()
    for src, dst in zip(COLUMNS, line.split()[1:])
]


def test_table_has_every_cell_once():
    assert len(CELLS) == 20
    assert set(TRANSITIONS) == {(s, e) for s in State for e in Event}


@pytest.mark.parametrize("src,event,dst", CELLS, ids=[f"{s.value}-{e.value}" for s, e, _ in CELLS])
def test_every_cell(src, event, dst):
    machine = StateMachine()
    machine.state = src
    entered = []
    machine._on_enter = {s: (lambda old, ev, why, s=s: entered.append((old, s, ev))) for s in State}
    changed = machine.handle(event, "test")
    assert machine.state is dst
    assert changed == (src is not dst)
    # Enter-actions run exactly on a real change, with the old state and the event.
    assert entered == ([(src, dst, event)] if src is not dst else [])


def test_initial_state_is_booting():
    assert StateMachine().state is State.BOOTING


def test_diagram_and_table_come_from_the_table():
    diagram = mermaid()
    for (src, event), dst in TRANSITIONS.items():
        line = f"{src.value} --> {dst.value}: {event.value}"
        assert (line in diagram) == (src is not dst)
    table = markdown_table()
    assert "| health_check_success | BOOTING | STANDBY | ACTIVATED | STANDBY |" in table


def test_readme_diagram_is_current():
    import pathlib

    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    if not readme.exists():
        pytest.fail("README.md is missing")
    assert mermaid() in readme.read_text(), "README's state diagram is stale: regenerate with python -m link.worker.fsm"

"""The quiz from a hostile machine and a hostile file (issue 22, items 4 and 5): the server (`petbreeds quiz`) serves only its
own page: its token is on no command line and in no log, a page of another origin gets neither the page nor a kernel's
websocket, kernels are capped in number and bounded in memory, and its fallback store in the shared temporary folder writes
through no planted link; an imported answers file is checked whole and applied all or nothing, and its code answers run only
once the learner has confirmed them.

The server tests start Voilà (about 4 s each here, like tests/test_quiz_app.py's); the rest run in-process, in milliseconds."""
import asyncio, http.client, json, os, re, stat, tempfile
from pathlib import Path

import pytest

from petbreeds.quiz import QUESTIONS
from petbreeds.quiz_store import Store, StoreError
from petbreeds.safety import PetbreedsError

UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'


# --- the server ---------------------------------------------------------------------------------------------------
@pytest.fixture
def serve(tmp_path):
    "`serve(**kw)`: a running quiz server (`serve_quiz(**kw)`), with its `port` and `token`; stopped afterwards."
    pytest.importorskip('voila', reason='Voila is not installed: pip install voila')
    from petbreeds.quiz_app import serve_quiz
    running = []
    def start(**kw):
        srv = serve_quiz(port=0, block=False, progress=tmp_path/'answers.sqlite3', **kw)
        running.append(srv)
        srv.port, srv.token = int(srv.url.split(':')[2].split('/')[0]), srv.url.split('token=')[1]
        return srv
    yield start
    for srv in running: srv.stop()


def get(srv, path, **headers):
    "GET `path` from `srv`: (status, headers, body)."
    c = http.client.HTTPConnection('127.0.0.1', srv.port, timeout=180)
    c.request('GET', path, headers=headers)
    r = c.getresponse()
    return r.status, r.headers, r.read().decode('utf-8', 'replace')


def tree(srv):
    import psutil
    p = psutil.Process(srv.proc.pid)
    return [p, *p.children(recursive=True)]


def kernels(srv): return [p for p in tree(srv)[1:] if 'ipykernel' in ' '.join(p.cmdline())]


def websocket(srv, kernel_id, origin):
    "Open the kernel's websocket with the token, from a page of `origin`: 'open', or why it was refused."
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect
    async def go():
        req = HTTPRequest(f'ws://127.0.0.1:{srv.port}/api/kernels/{kernel_id}/channels?token={srv.token}', headers={'Origin': origin})
        try: (await websocket_connect(req)).close(); return 'open'
        except Exception as e: return f'refused: {e}'
    return asyncio.run(go())


def test_token_on_no_command_line_and_in_no_log(serve):
    "/proc/PID/cmdline is readable by every user: the token is on none, neither Voilà's nor a kernel's, and not in the log."
    server = serve()
    status, _, _ = get(server, f'/?token={server.token}')
    assert status == 200 and kernels(server)
    lines = [' '.join(p.cmdline()) for p in tree(server)]
    assert not [l for l in lines if server.token in l], 'the token is on a command line'
    assert get(server, f'/?token={server.token}', Origin='http://evil.example')[0] != 200   # a refusal is logged: with its URL
    assert server.token not in server.log.read_text(errors='replace')
    token_file = Path(server.workdir.name)/'token'
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.read_text() == server.token
    assert stat.S_IMODE(os.stat(server.workdir.name).st_mode) == 0o700


def test_another_origin_gets_no_page_and_no_websocket(serve):
    "A page on another site that holds the token: no page, no CORS header for it, no kernel, and no kernel's websocket."
    server = serve()
    evil = 'http://evil.example'
    status, headers, _ = get(server, f'/?token={server.token}', Origin=evil)
    assert status != 200 and headers.get('Access-Control-Allow-Origin') != evil
    assert kernels(server) == []
    own = f'http://127.0.0.1:{server.port}'
    status, headers, body = get(server, f'/?token={server.token}', Origin=own)   # the learner's own page
    assert status == 200 and headers.get('Access-Control-Allow-Origin') in (None, own)
    kernel_id = re.search(UUID, body)[0]
    assert websocket(server, kernel_id, evil).startswith('refused: HTTP 403')
    assert websocket(server, kernel_id, own) == 'open'


def test_kernels_capped_and_bounded(serve):
    "With max_kernels=2, a third page is refused (503) and starts nothing; each kernel's data is limited, for good."
    import psutil, resource
    server = serve(max_kernels=2)
    assert [get(server, f'/?token={server.token}')[0] for _ in range(2)] == [200, 200]
    status, _, body = get(server, f'/?token={server.token}')
    assert status == 503 and 'quiz pages are open already' in body
    ks = kernels(server)
    assert len(ks) == 2
    for k in ks:
        soft, hard = k.rlimit(psutil.RLIMIT_DATA)
        assert soft == hard != resource.RLIM_INFINITY and 4*2**30 <= soft < 64*2**30


def test_fallback_store_follows_no_planted_link(tmp_path, monkeypatch, capsys):
    "Another user plants the fallback store's old name, and a folder by its new one, in the shared temporary folder: neither is written to."
    from petbreeds.quiz_app import _writable_store
    shared, victim = tmp_path/'tmp', tmp_path/'victim'
    shared.mkdir(); shared.chmod(0o1777); victim.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(shared))
    uid = os.getuid()
    (shared/f'petbreeds-quiz-{uid}.sqlite3').symlink_to(victim/'theirs.sqlite3')   # the name today's code writes to
    (shared/f'petbreeds-answers-{uid}').symlink_to(victim)                          # a link by the name of our folder
    (tmp_path/'afile').write_text('a file, not a folder')
    path = _writable_store(tmp_path/'afile'/'answers.sqlite3')
    Store(path).put('q1', 'saved anyway')
    assert list(victim.iterdir()) == [], 'wrote through a planted link'
    d = path.parent
    assert d.parent == shared and not d.is_symlink() and stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == uid
    assert Store(path).get('q1') == 'saved anyway' and 'For now the quiz saves to' in capsys.readouterr().err


# --- an imported answers file --------------------------------------------------------------------------------------
def answers(tmp_path, entries, name='theirs.json'):
    p = tmp_path/name
    p.write_text(json.dumps(dict(format='petbreeds-quiz-answers', version=1, answers=entries)))
    return p


@pytest.fixture
def store(tmp_path):
    st = Store(tmp_path/'mine.sqlite3', verbose=False)
    st.put('q15', 'nan: no power of e is negative')
    return st


BAD = {'unknown question': {'q99': 'x'}, 'unknown item': {'q15.7': {'response': 'nan', 'passed': True}},
       'not a key': {'../etc': 'x'}, 'text as a list': {'q7': ['dls.show_batch()']}, 'text as a number': {'q7': 3},
       'rubric point out of range': {'q15.self': [0, 5]}, 'rubric point as text': {'q15.self': ['0']},
       'rubric point as a bool': {'q15.self': [True]}, 'verdict as text': {'q5.1': {'response': 'p.stem', 'passed': 'yes'}},
       'response as a number': {'q13.1': {'response': 1.02, 'passed': True}}, 'item with more': {'q5.1': {'response': 'x', 'run': 'os'}},
       'deep': {'q7': {'text': [[[[[[[[[['x']]]]]]]]]]}}, 'long text': {'q7': 'x'*20_001}}


@pytest.mark.parametrize('case', BAD)
def test_a_bad_answer_refuses_the_whole_file(store, tmp_path, case):
    "Each kind of answer the quiz never saves: the file is refused in one line naming it, and none of its answers is written."
    before = dict(store.values)
    src = answers(tmp_path, {'q16': 'a tenth of the minimum', **BAD[case], 'q17': 'the steepest point'})
    with pytest.raises(StoreError) as e: store.import_answers(src, QUESTIONS)
    msg = str(e.value)
    assert isinstance(e.value, PetbreedsError) and len(msg.splitlines()) == 1 and str(src) in msg, msg
    assert store.values == before and Store(store.path).values == before


NOT_ANSWERS = dict(nan=('{"answers": {"q15.self": [NaN]}}', 'NaN'), overflow=('{"answers": {"q15.self": [1e999]}}', '1e999'),
    infinity=('{"answers": {"q15.self": [-Infinity]}}', 'Infinity'), deep=('[' * 100_000 + ']' * 100_000, 'nested'),
    huge=('{"answers": {"q7": "' + 'x' * 2**20 + '"}}', 'larger than'),
    other_format=('{"format": "bank-export", "answers": {}}', 'no quiz answers'))


@pytest.mark.parametrize('case', NOT_ANSWERS)
def test_a_file_that_is_not_answers(store, tmp_path, case):
    "Numbers that are not finite, nesting or size beyond what answers need, JSON that holds no answers: one line, nothing written."
    text, why = NOT_ANSWERS[case]
    src = tmp_path/'odd.json'
    src.write_text(text)
    before = dict(store.values)
    with pytest.raises(StoreError, match=re.escape(why)) as e: store.import_answers(src, QUESTIONS)
    assert len(str(e.value).splitlines()) == 1 and str(src) in str(e.value)
    assert store.values == before


def test_a_good_file_is_imported_whole(store, tmp_path):
    "Answers the quiz saves (and the old progress file's entries) come in together; checked items marked as imported."
    src = answers(tmp_path, {'q16': 'a tenth of the minimum', 'q15.self': [0], 'q5.1': {'response': "p.with_suffix('.png').name", 'passed': True},
                             'q15.1': {'response': None, 'passed': False}, 'q7': {'text': 'show_batch', 't': 1e300}})
    assert store.import_answers(src, QUESTIONS) == 5
    again = Store(store.path)
    assert again.get('q5.1') == {'response': "p.with_suffix('.png').name", 'passed': True, 'imported': True}
    assert (again.get('q16'), again.get('q15.self'), again.get('q7')) == ('a tenth of the minimum', [0], 'show_batch')


def test_imported_code_runs_only_once_confirmed(store, tmp_path):
    "An imported code answer: one click of Check runs nothing and shows the code; Run it runs it; an edited one is checked at once."
    pytest.importorskip('ipywidgets')
    from petbreeds.quiz_widgets import quiz_widget
    ran = tmp_path/'ran'
    src = answers(tmp_path, {'q5.1': {'response': f'Path({str(ran)!r}).touch() or p.stem  # \u202egnp.', 'passed': True}})
    store.import_answers(src, QUESTIONS)
    row = quiz_widget([5], store).views['q5'].rows[0]
    assert row.input.value.startswith('Path(') and 'imported' in row.feedback.value.lower()
    row.check.click()
    assert not ran.exists(), 'imported code ran on one click of Check'
    assert 'has not run here' in row.feedback.value and row.confirm.layout.display == ''
    assert '\\u202e' in row.feedback.value and '\u202e' not in row.feedback.value   # shown as it is: nothing reordered
    row.confirm.click()
    assert ran.exists() and row.confirm.layout.display == 'none'
    assert store.get('q5.1') == {'response': row.input.value, 'passed': False}   # checked here: the learner's now
    ran.unlink()
    store.import_answers(src, QUESTIONS)
    row = quiz_widget([5], store).views['q5'].rows[0]
    row.input.value = "p.with_suffix('.png').name"
    row.check.click()
    assert 'Machine check: Right' in row.feedback.value and not ran.exists()

"""The grader's check inside a student's kernel: hidden tests run as written, or not at all.

Standalone on purpose: the grader sends this file's source to the kernel in the
first request of a submission (silent, not stored in the history), before any
student code runs. ``install`` takes a snapshot of everything that decides how a
later cell runs (IPython's input/AST transformers, events, custom exception
handlers, display hooks and shell methods; ``sys`` trace/profile functions and
the ``threading`` hooks; the import machinery; ``builtins``; signal handlers;
library functions) and adds an audit hook that records, from student code,
tracing/profiling, frame and garbage-collector introspection, raw memory reads
through ``ctypes``, ``fork`` and new audit hooks.

The grader then runs every graded test cell as the single statement
``__import__("sys").modules["_mi_grader_guard"].run(NONCE, SOURCE)``: ``run``
compares the machinery with the snapshot, executes the test source with the
original ``compile``/``exec`` (no IPython transformer, event or exception handler
in between), compares again and reports ``pass``, ``fail`` or ``held`` on the
kernel's original stdout in one line ``MI-GUARD <nonce> <verdict> <mac>`` whose
HMAC (key known only to the grader and to this closure) also covers the SHA-256
of the source it ran. Anything else (no line, a bad MAC, another source) is
held for manual review by the grader.

What it cannot do: code in the same process that reads interpreter internals
(the closure below, through attributes it does not audit) can forge a line.
Those reads are what the audit hook and the grader's static scan look for.
"""


def install(key_hex):
    import ast
    import base64
    import builtins
    import hashlib
    import hmac
    import os
    import signal
    import sys
    import threading

    shell = get_ipython()  # noqa: F821  (IPython's, in the kernel)
    _id, _type, _getattr, _tuple, _sorted, _isinstance, _len = id, type, getattr, tuple, sorted, isinstance, len
    _exec, _compile, _repr, _str, _callable, _vars, _issubclass = exec, compile, repr, str, callable, vars, issubclass
    _gettrace, _getprofile, _getframe, _modules = sys.gettrace, sys.getprofile, sys._getframe, sys.modules
    _getsignal, _enumerate = signal.getsignal, threading.enumerate
    _mac = hmac.new(bytes.fromhex(key_hex), digestmod=hashlib.sha256)
    _sha, _b64decode, _b64encode = hashlib.sha256, base64.b64decode, base64.b64encode
    _parse, _Module, _Interactive, _Expr = ast.parse, ast.Module, ast.Interactive, ast.Expr
    _write, _flush = sys.stdout.write, sys.stdout.flush
    _FunctionType = _type(install)
    # Where the code of notebook cells "lives": ipykernel's cell files, IPython's pseudo-files.
    cell_name = shell.compile.get_code_name("pass", "pass", 0)
    cell_prefixes = ("<ipython-input-",) + ((os.path.dirname(cell_name) + os.sep,) if os.path.isabs(cell_name) else ())
    user_ns, global_ns = shell.user_ns, shell.user_global_ns
    state = {"busy": 0, "events": {}}
    signals = [s for s in ("SIGALRM", "SIGVTALRM", "SIGPROF", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGTERM",
                           "SIGCHLD", "SIGIO", "SIGPIPE") if _getattr(signal, s, None) is not None]

    def is_student(filename):
        return _isinstance(filename, _str) and filename.startswith(cell_prefixes)

    transparent = (os.sep + "inspect.py", os.sep + "traceback.py")

    def caller_is_student(depth):
        """Student code made the call: directly, or through ``inspect``/``traceback`` (up to
        ``depth`` frames). A library in between (nnsight reading its caller's frame) is not the
        student; nor is CPython clearing a library's per-frame hook (nnsight's ``f_trace``, which
        skips a traced ``with`` body) on the student's frame."""
        frame = _getframe(2)
        for _ in range(depth):
            if frame is None:
                return False
            name = frame.f_code.co_filename
            if is_student(name):
                hook = frame.f_trace
                hook_file = _getattr(_getattr(hook, "__code__", None), "co_filename", None)
                return hook is None or is_student(hook_file)
            if not (_isinstance(name, _str) and name.endswith(transparent)):
                return False
            frame = frame.f_back
        return False

    # event -> how many Python frames above it to look at for student code (0: always recorded)
    watched = {"sys.settrace": 1, "sys.setprofile": 1, "sys._getframe": 3, "object.__getattr__": 1,
               "gc.get_referrers": 0, "gc.get_referents": 0, "gc.get_objects": 0, "ctypes.string_at": 0,
               "ctypes.cdata": 0, "ctypes.PyObj_FromPtr": 0, "ctypes.wstring_at": 0, "os.fork": 0,
               "os.forkpty": 0, "sys._current_frames": 0, "sys.addaudithook": 0, "cpython.remote_debugger_script": 0}

    def audit(event, args):
        depth = watched.get(event)
        if depth is None or state["busy"]:
            return
        state["busy"] += 1
        try:
            if event == "object.__getattr__" and (_len(args) < 2 or args[1] not in (
                    "tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "__code__")):
                return
            if depth and not caller_is_student(depth):
                return
            name = event if event != "object.__getattr__" else f"reads {args[1]}"
            state["events"][name] = state["events"].get(name, 0) + 1
        finally:
            state["busy"] -= 1
        if event == "sys.addaudithook":
            raise RuntimeError("audit hooks are not allowed while grading")

    _MethodType = _type(shell.run_cell)
    _type_module, _type_dict = _type.__dict__["__module__"].__get__, _type.__dict__["__dict__"].__get__

    def student_function(fn):
        """A function defined in a notebook cell (read without running any of the object's code)."""
        if _type(fn) is _MethodType:
            fn = fn.__func__
        return _type(fn) is _FunctionType and (fn.__globals__ is user_ns or fn.__module__ == "__main__")

    def from_student(obj):
        """A function, class or instance whose code comes from a notebook cell."""
        if student_function(obj):
            return True
        cls = obj if _issubclass(_type(obj), _type) else _type(obj)
        return _type_module(cls) == "__main__" or any(student_function(v) for v in _type_dict(cls).values())

    def items(obj):
        return _tuple(obj) if obj is not None else ()

    def methods(cls):
        return {k: v for k, v in _vars(cls).items() if k != "__doc__"}

    def machinery():
        s = {}
        s["sys trace function"] = _gettrace()
        s["sys profile function"] = _getprofile()
        s["threading trace hook"] = _getattr(threading, "_trace_hook", None)
        s["threading profile hook"] = _getattr(threading, "_profile_hook", None)
        for name in ("displayhook", "breakpointhook", "meta_path", "path_hooks",
                     "path_importer_cache", "modules", "stdout", "stderr"):
            s[f"sys.{name}"] = _getattr(sys, name, None)
        # libraries add import hooks of their own: only the student's count
        s["sys.meta_path entries"] = _tuple(e for e in sys.meta_path if from_student(e))
        s["sys.path_hooks entries"] = _tuple(e for e in sys.path_hooks if from_student(e))
        s["sys.path"] = _tuple(p if _type(p) is _str else _id(p) for p in sys.path)
        s["import finders cached"] = _tuple(_sorted({_type(v).__qualname__ for v in sys.path_importer_cache.values()
                                                     if v is not None and from_student(v)}))
        # (ipykernel sets input() for each request)
        s["builtins"] = {k: v for k, v in _vars(builtins).items() if k not in ("_", "__", "___", "input", "raw_input")}
        s["the namespace's builtins"] = user_ns.get("__builtins__")
        s["the user namespace"] = (shell.user_ns, shell.user_global_ns)
        for name in ("input_transformers_post", "ast_transformers", "custom_exceptions"):
            s[f"IPython {name}"] = items(_getattr(shell, name, None))
        manager = shell.input_transformer_manager
        s["IPython input transformer manager"] = manager
        for name in ("cleanup_transforms", "line_transforms", "token_transformers"):
            s[f"IPython {name}"] = items(_getattr(manager, name, None))
        prefilter = shell.prefilter_manager
        s["IPython prefilter"] = prefilter
        s["IPython prefilter transformers"] = items(prefilter.transformers)
        s["IPython prefilter checkers"] = items(prefilter.checkers)
        s["IPython event callbacks"] = {k: items(v) for k, v in shell.events.callbacks.items()}
        for name in ("CustomTB", "InteractiveTB", "SyntaxTB", "compile", "displayhook", "display_pub",
                     "display_formatter", "events", "builtin_trap", "autocall", "kernel"):
            s[f"IPython {name}"] = _getattr(shell, name, None)
        s["IPython formatters"] = {k: (f, f.__class__) for k, f in shell.display_formatter.formatters.items()}
        shell_classes = [c for c in _type(shell).__mro__ if c.__module__.startswith(("IPython", "ipykernel"))]
        s["IPython shell class"] = _type(shell)
        for cls in shell_classes + [_type(shell.compile), _type(shell.displayhook)]:
            s[f"{cls.__qualname__} methods"] = methods(cls)
        s["IPython shell methods replaced"] = _tuple(_sorted(
            k for k, v in _vars(shell).items() if _callable(v) and any(k in _vars(c) for c in shell_classes)))
        s["signal handlers"] = {n: _getsignal(_getattr(signal, n)) for n in signals}
        return s

    def same(a, b):
        if _type(a) is _tuple and _type(b) is _tuple:
            return _len(a) == _len(b) and all(x is y or _type(x) is _str and _type(y) is _str and x == y
                                              for x, y in zip(a, b))
        if _type(a) is dict and _type(b) is dict:
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return a is b or _type(a) is _str and _type(b) is _str and a == b

    def differences(before, after):
        found = []
        for name, value in before.items():
            if not same(value, after.get(name)):
                if _type(value) is dict and _type(after.get(name)) is dict:
                    keys = _sorted(k for k in set(value) | set(after[name])
                                   if not same(value.get(k), after[name].get(k)))[:5]
                    found.append(f"{name} changed ({', '.join(map(_str, keys))})")
                else:
                    found.append(f"{name} changed")
        return found

    def patched_libraries():
        """Module-level functions (and methods of module-level classes) of library modules that
        were defined in a notebook cell: a student's monkeypatch."""
        found = []
        for modname, module in _tuple(_modules.items()):
            if modname == "__main__" or module is None:
                continue
            try:
                namespace = _vars(module)
            except TypeError:
                continue
            if namespace is user_ns or namespace is global_ns:  # __mp_main__ and such: the notebook itself
                continue
            for attr, value in _tuple(namespace.items()):
                targets = [value]
                # type() only: touching an object's attributes can run its code (and warn)
                if _issubclass(_type(value), _type) and _type_module(value) == modname:
                    targets = [value] + [v for v in _type_dict(value).values() if _type(v) is _FunctionType]
                for target in targets:  # (not through __code__: every read of it is audited)
                    if student_function(target):
                        found.append(f"{modname}.{attr}")
                        break
                if _len(found) >= 5:
                    return found
        return found


    def student_threads():
        found = []
        for thread in _enumerate():
            fields = _vars(thread) if _type_dict(_type(thread)).get("__slots__") is None else {}
            if from_student(_type(thread)) or student_function(fields.get("_target")):
                found.append(_str(fields.get("_name", "?")))
        return found

    def problems(libraries=True):
        found = differences(snapshot, machinery())
        found += [f"{name} by student code ({count}x)" for name, count in _sorted(state["events"].items())]
        patched = patched_libraries() if libraries else []
        if patched:
            found.append(f"library functions replaced: {', '.join(patched)}")
        threads = student_threads()
        if threads:
            found.append(f"threads running student code: {', '.join(threads[:3])}")
        return found

    def emit(nonce, verdict, source, detail=""):
        detail = _b64encode(detail.encode("utf-8", "replace")[:2000]).decode()
        message = f"{nonce} {verdict} {_sha(source.encode()).hexdigest()} {detail}"
        mac = _mac.copy()
        mac.update(message.encode())
        _write(f"\nMI-GUARD {nonce} {verdict} {detail} {mac.hexdigest()}\n")
        _flush()

    def run(nonce, source_b64):
        state["busy"] += 1
        try:
            source = _b64decode(source_b64).decode()
            found = problems()
            if found:
                emit(nonce, "held", source, "; ".join(found))
                return
            tree = _parse(source, "<hidden test>", "exec")
            last = tree.body.pop() if tree.body and _isinstance(tree.body[-1], _Expr) else None
            codes = [_compile(tree, "<hidden test>", "exec")]
            if last is not None:
                codes.append(_compile(_Interactive(body=[last]), "<hidden test>", "single"))
        finally:
            state["busy"] -= 1
        error = None
        try:
            for code in codes:
                _exec(code, global_ns, user_ns)
        except BaseException as err:  # noqa: BLE001  a failing test, reported then raised again
            error = err
        state["busy"] += 1
        try:
            found = problems(libraries=False)  # (the libraries were scanned before: ~0.1 s each time)
            if found:
                emit(nonce, "held", source, "; ".join(found))
            elif error is not None:
                emit(nonce, "fail", source, f"{_type(error).__name__}: {error}")
            else:
                emit(nonce, "pass", source)
        finally:
            state["busy"] -= 1
        if error is not None:
            raise error

    def diagnose():
        """What changed, for the grader when ``run`` did not report (asked outside any cell)."""
        state["busy"] += 1
        try:
            return "; ".join(problems()) or "nothing the check compares"
        finally:
            state["busy"] -= 1

    snapshot = machinery()
    sys.addaudithook(audit)
    guard = _type(sys)("_mi_grader_guard")
    guard.run, guard.diagnose = run, diagnose
    _modules["_mi_grader_guard"] = guard

"""memd.Client and memd.StdioClient against a real memd (ctest python_client).

A `memd serve` on an ephemeral port and a `memd stdio`, both with one 64 MiB
host device (no GPU). The same contract runs through both doors (and
through `memd stdio --connect`), then each door's own parts.
"""
import concurrent.futures
import inspect
import os
import socket
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import HOST_DEVICE, Daemon, memd_binary  # noqa: E402

import memd  # noqa: E402

BOGUS_ID = "a1b2c3d4-e5f6-4890-abcd-ef1234567890"
TOO_BIG = "100MiB"  # over host:0's 64 MiB: out_of_memory, and an allocation_failed event


class GeneratedMethods(unittest.TestCase):
    """The methods come from the action table: all of them, on both clients."""

    def test_every_action_has_a_method_on_both_clients(self):
        self.assertGreater(len(memd.ACTIONS), 30)
        for cls in (memd.Client, memd.StdioClient):
            for name, spec in memd.SPECS.items():
                method = getattr(cls, name, None)
                self.assertTrue(callable(method), f"{cls.__name__}.{name}")
                params = inspect.signature(method).parameters
                for p in spec.params:
                    self.assertIn(p.py, params, f"{cls.__name__}.{name} lacks {p.py}")
                self.assertEqual(len(params) - 1, len(spec.params), f"{cls.__name__}.{name}: extra parameters")
                alias = memd.alias_of(name)
                if alias and alias not in ("close", "events", "call", "request"):
                    self.assertIs(getattr(cls, alias), method, f"{cls.__name__}.{alias}")

    def test_snake_case(self):
        self.assertEqual(memd.snake("sizeBytes"), "size_bytes")
        self.assertEqual(memd.snake("deviceId"), "device_id")
        self.assertEqual(memd.snake("ttlSeconds"), "ttl_seconds")
        self.assertIn("size_bytes", inspect.signature(memd.Client.memory_allocate).parameters)

    def test_one_error_class_per_code(self):
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "include", "memd", "error.hpp")) as f:
            header = f.read()
        body = header[header.index("enum class ErrorCode"):header.index("};", header.index("enum class ErrorCode"))]
        codes = [line.split(",")[0].strip() for line in body.splitlines()[1:] if line.strip() and
                 not line.strip().startswith("//")]
        self.assertEqual(sorted(codes), sorted(memd.ERRORS))
        for code, status in memd.ERRORS.items():
            cls = memd.ERROR_CLASSES[code]
            self.assertTrue(issubclass(cls, memd.MemdError))
            self.assertEqual((cls.code, cls.http_status), (code, status))
        self.assertIs(memd.NotFoundError, memd.ERROR_CLASSES["not_found"])
        self.assertEqual(memd.OutOfMemoryError.http_status, 507)
        e = memd.error_from({"code": "conflict", "message": "no"}, 409)
        self.assertIsInstance(e, memd.ConflictError)
        self.assertEqual((e.code, e.message, e.http_status), ("conflict", "no", 409))
        e = memd.error_from({"code": "from_the_future", "message": "?"}, 418)
        self.assertEqual((type(e), e.code, e.http_status), (memd.MemdError, "from_the_future", 418))
        self.assertIsInstance(memd.error_from("not an object", 404), memd.NotFoundError)

    def test_arguments_are_checked_before_sending(self):
        # Nothing listens there: a TypeError proves nothing was sent.
        c = memd.Client("http://127.0.0.1:9")
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'size'"):
            c.memory_allocate(size=1)
        with self.assertRaisesRegex(TypeError, "missing required argument 'size_bytes'"):
            c.memory_allocate()
        with self.assertRaisesRegex(TypeError, "multiple values"):
            c.memory_allocate(1, size_bytes=2)
        with self.assertRaisesRegex(TypeError, "multiple values"):
            c.memory_allocate(size_bytes=1, sizeBytes=2)
        with self.assertRaisesRegex(TypeError, "positional"):
            c.memory_usage(1)
        with self.assertRaises(TypeError):
            c.call("memory_teleport")
        with self.assertRaises(ValueError):
            memd.Client("ftp://example")
        with self.assertRaises(memd.TransportError):
            c.memory_usage()  # and an unreachable daemon is a TransportError


class Contract:
    """What both doors answer alike; subclasses set cls.client."""

    client = None

    def allocate(self, size=4096, **kw):
        a = self.client.memory_allocate(size_bytes=size, device_id="host:0", **kw)
        self.addCleanup(self.free_quietly, a["allocationId"])
        return a

    def free_quietly(self, allocation_id):
        try:
            self.client.memory_deallocate(allocation_id)
        except memd.NotFoundError:
            pass

    def test_allocate_write_read_free(self):
        a = self.allocate("4KiB", name="py", tags=["pyclient"])
        self.assertEqual((a["sizeBytes"], a["deviceId"], a["status"]), (4096, "host:0", "Allocated"))
        w = self.client.memory_write(a["allocationId"], b"hello\x00\xff", offset=10)
        self.assertEqual(w["bytesWritten"], 7)
        self.assertEqual(self.client.memory_read(a["allocationId"], offset=10, length=7), b"hello\x00\xff")
        self.assertEqual(len(self.client.read(allocation_id=a["allocationId"])), 4096)
        self.assertEqual(self.client.memory_allocation_details(a["allocationId"])["name"], "py")
        listed = self.client.memory_allocations(tag="pyclient")
        self.assertEqual([i["allocationId"] for i in listed["items"]], [a["allocationId"]])
        freed = self.client.memory_deallocate(a["allocationId"])
        self.assertEqual(freed["status"], "Freed")
        with self.assertRaises(memd.NotFoundError) as cm:
            self.client.memory_deallocate(a["allocationId"])
        self.assertEqual((cm.exception.code, cm.exception.http_status), ("not_found", 404))

    def test_transfer_and_copy(self):
        src, dst = self.allocate(64), self.allocate(64)
        self.client.memory_write(src["allocationId"], bytes(range(64)))
        t = self.client.memory_transfer(source_allocation_id=src["allocationId"],
                                        destination_allocation_id=dst["allocationId"], size_bytes=32)
        deadline = time.monotonic() + 10
        while self.client.memory_transfer_status(t["transferId"])["status"] not in ("Completed", "Failed"):
            self.assertLess(time.monotonic(), deadline, "the transfer did not finish in 10 s")
            time.sleep(0.01)
        self.assertEqual(self.client.memory_read(dst["allocationId"], length=32), bytes(range(32)))
        self.client.memory_copy(source_allocation_id=src["allocationId"], destination_allocation_id=dst["allocationId"],
                                source_offset=32, destination_offset=32)
        self.assertEqual(self.client.memory_read(dst["allocationId"]), bytes(range(64)))

    def test_status_and_other_reads(self):
        status = self.client.status()
        self.assertIn("host:0", [d["deviceId"] for d in status["devices"]])
        one = self.client.memory_status(device_id="host:0")
        self.assertEqual([d["deviceId"] for d in one["devices"]], ["host:0"])
        self.assertEqual(one["devices"][0]["totalBytes"], 64 * 1024 * 1024)
        self.assertIn("total", self.client.memory_usage())
        self.assertIn("devices", self.client.memory_devices())
        self.assertIsInstance(self.client.memory_health(), dict)
        self.assertIsInstance(self.client.memory_limits(), dict)
        with self.assertRaises(memd.NotFoundError):
            self.client.memory_status(device_id="host:7")

    def test_typed_errors(self):
        with self.assertRaises(memd.NotFoundError):
            self.client.memory_allocation_details(BOGUS_ID)
        with self.assertRaises(memd.InvalidArgumentError) as cm:
            self.client.memory_allocate(size_bytes=0, device_id="host:0")
        self.assertEqual(cm.exception.http_status, 400)
        self.assertIn("sizeBytes", cm.exception.message)
        with self.assertRaises(memd.InvalidArgumentError):
            self.client.memory_allocate(size_bytes="lots", device_id="host:0")
        with self.assertRaises(memd.InvalidArgumentError):
            self.client.memory_allocate(size_bytes=1, memory_type="vram")  # enums are exact case
        with self.assertRaises(memd.OutOfMemoryError) as cm:
            self.client.memory_allocate(size_bytes=TOO_BIG, device_id="host:0")
        self.assertEqual((cm.exception.code, cm.exception.http_status), ("out_of_memory", 507))
        self.assertTrue(cm.exception.snapshot_id)
        a = self.allocate(16)
        with self.assertRaises(memd.OutOfRangeError):
            self.client.memory_write(a["allocationId"], b"x" * 17)
        with self.assertRaises(memd.MemdError):  # the base class catches them all
            self.client.memory_read(a["allocationId"], offset=100)

    def test_hostile_inputs(self):
        for bad in ("not-a-guid", "../../healthz", "a/b?c=d#e", "\u202e" + BOGUS_ID, "x" * 300):
            with self.assertRaises((memd.InvalidArgumentError, memd.NotFoundError), msg=repr(bad)):
                self.client.memory_allocation_details(allocation_id=bad)
        with self.assertRaises(memd.InvalidArgumentError):
            self.client.memory_allocations(owner="a\nb")
        with self.assertRaises(TypeError):
            self.client.memory_write(BOGUS_ID, 5)  # data must be bytes
        with self.assertRaises(TypeError):
            self.client.memory_allocate(size_bytes=1, colour="red")

    def test_session(self):
        with self.client.open_session(ttl_seconds=30) as s:
            self.assertTrue(uuid.UUID(s.id))
            a = s.client.memory_allocate(size_bytes=1024, device_id="host:0")
            self.assertIn(s.id, [x["sessionId"] for x in self.client.memory_sessions()["sessions"]])
            renewed = s.renew()
            self.assertEqual(renewed["allocations"], 1)
            closed = s.close()
        self.assertEqual(closed["releasedAllocations"], 1)
        self.assertEqual(closed["allocationIds"], [a["allocationId"]])
        with self.assertRaises(memd.NotFoundError):
            self.client.memory_allocation_details(a["allocationId"])
        with self.assertRaises(memd.NotFoundError):
            self.client.memory_session_renew(session_id=s.id)
        with self.assertRaises(memd.InvalidArgumentError):
            self.client.with_session("not-a-session").memory_allocate(size_bytes=1, device_id="host:0")

    def test_events_from_an_allocation(self):
        with self.client.events(kinds=["allocation_failed"], device_id="host:0", timeout=10) as events:
            with self.assertRaises(memd.OutOfMemoryError):
                self.client.memory_allocate(size_bytes=TOO_BIG, device_id="host:0", name="too-big")
            e = next(events)
        self.assertEqual((e["event"], e["deviceId"]), ("allocation_failed", "host:0"))
        self.assertEqual((e["data"]["name"], e["data"]["sizeBytes"]), ("too-big", 100 * 1024 * 1024))
        self.assertIsInstance(e["sequence"], int)
        with self.assertRaises(memd.InvalidArgumentError):
            self.client.events(kinds="no_such_kind")


class RestTest(Contract, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon()
        cls.client = memd.Client(cls.daemon.url)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.daemon.stop()

    def test_path_parameters_cannot_change_the_route(self):
        for bad in ("", ".", ".."):
            with self.assertRaisesRegex(ValueError, "path parameter"):
                self.client.memory_deallocate(allocation_id=bad)

    def test_keep_alive(self):
        self.client.memory_usage()
        conn = self.client._local.conn
        self.client.memory_usage()
        self.client.memory_devices()
        self.assertIs(self.client._local.conn, conn)
        conn.sock.shutdown(socket.SHUT_RDWR)  # as if memd closed it while idle
        self.assertIn("total", self.client.memory_usage())

    def test_limits_route_choice_and_quota(self):
        admin = memd.Client(self.daemon.url, admin=True)
        self.addCleanup(admin.close)
        owner = "py-quota"
        admin.memory_limits(owner=owner, bytes="8KiB")  # PUT
        self.addCleanup(admin.memory_limits, owner=owner, bytes=None)
        limits = admin.memory_limits()  # GET
        self.assertIn(owner, str(limits))
        worker = memd.Client(self.daemon.url, owner=owner)
        self.addCleanup(worker.close)
        with self.assertRaises(memd.QuotaExceededError) as cm:
            worker.memory_allocate(size_bytes="16KiB", device_id="host:0")
        self.assertEqual(cm.exception.http_status, 507)
        with self.assertRaises(memd.PermissionDeniedError):
            worker.memory_limits(owner=owner, bytes="1GiB")

    def test_events_resume_with_last_event_id(self):
        with self.client.events(kinds="allocation_failed", timeout=10) as events:
            with self.assertRaises(memd.OutOfMemoryError):
                self.client.memory_allocate(size_bytes=TOO_BIG, device_id="host:0", name="first")
            first = next(events)
            self.assertEqual(events.last_event_id, first["sequence"])
            # The connection drops; meanwhile another event is published.
            events._sock.shutdown(socket.SHUT_RDWR)
            with self.assertRaises(memd.OutOfMemoryError):
                self.client.memory_allocate(size_bytes=TOO_BIG, device_id="host:0", name="second")
            second = next(events)  # reconnected with Last-Event-ID: nothing missed
        self.assertEqual(second["data"]["name"], "second")
        self.assertGreater(second["sequence"], first["sequence"])
        with self.client.events(kinds="allocation_failed", last_event_id=first["sequence"] - 1,
                                timeout=10) as again:
            self.assertEqual(next(again)["sequence"], first["sequence"])
        with self.assertRaises(memd.UnsupportedError):
            self.client.memory_unsubscribe()

    def test_open_export(self):
        a = self.allocate(8192, exportable=True)
        self.client.memory_write(a["allocationId"], b"exported", offset=100)
        export = self.client.memory_export(a["allocationId"], owners=["anonymous"])
        self.assertEqual(export["socket"], self.daemon.socket)
        with self.client.open_export(export, writable=True) as ex:
            self.assertEqual(ex.size, 8192)
            self.assertEqual(ex.read(100, 8), b"exported")
            ex.write(0, b"from the mapping")
            view = ex.view()
            self.assertEqual(bytes(view[100:108]), b"exported")
            view.release()
        self.assertEqual(self.client.memory_read(a["allocationId"], length=16), b"from the mapping")
        with self.assertRaises(memd.PermissionDeniedError):
            memd.open_export(export, owner="someone-else")
        self.client.memory_export_release(a["allocationId"], export["exportId"])
        with self.assertRaises(memd.MemdError):
            memd.open_export(export["exportId"], self.daemon.socket)


class StdioTest(Contract, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = memd.StdioClient([memd_binary(), "--no-cuda", "--host-device", HOST_DEVICE, "stdio"])

    @classmethod
    def tearDownClass(cls):
        status = cls.client.close()
        if status != 0:
            raise AssertionError(f"memd stdio exited {status}")

    def test_concurrent_calls_match_their_answers(self):
        def work(i):
            a = self.client.memory_allocate(size_bytes=1000 + i, device_id="host:0", name=f"t{i}")
            self.client.memory_write(a["allocationId"], bytes([i]) * 8)
            got = self.client.memory_read(a["allocationId"], length=8)
            self.client.memory_deallocate(a["allocationId"])
            return a["sizeBytes"], a["name"], got

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(32)))
        self.assertEqual(results, [(1000 + i, f"t{i}", bytes([i]) * 8) for i in range(32)])

    def test_event_lines_between_responses(self):
        seen = []
        remove = self.client.on_event(seen.append)
        self.addCleanup(remove)
        with self.client.events(kinds="allocation_failed", timeout=10) as events:
            self.assertTrue(events.result["subscribed"])
            for i in range(3):
                with self.assertRaises(memd.OutOfMemoryError):
                    self.client.memory_allocate(size_bytes=TOO_BIG, device_id="host:0", name=f"e{i}")
                self.assertIn("total", self.client.memory_usage())  # answers still matched
            names = [next(events)["data"]["name"] for _ in range(3)]
        self.assertEqual(names, ["e0", "e1", "e2"])
        self.assertEqual([e["data"]["name"] for e in seen], names)

    def test_a_dead_process_is_a_transport_error(self):
        c = memd.StdioClient([memd_binary(), "--no-cuda", "--host-device", HOST_DEVICE, "stdio"])
        self.assertIn("total", c.memory_usage())
        c.process.kill()
        c.process.wait()
        with self.assertRaises(memd.TransportError):
            c.memory_usage()
        c.close()
        with self.assertRaises(memd.TransportError):
            memd.StdioClient(["/nonexistent/memd", "stdio"])


class StdioConnectTest(Contract, unittest.TestCase):
    """memd stdio --connect URL: the stdio protocol bridged to a daemon."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon()
        cls.client = memd.StdioClient([memd_binary(), "stdio", "--connect", cls.daemon.url, "--admin"])

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.daemon.stop()


if __name__ == "__main__":
    unittest.main()

# Three threads take numbers from a queue.Queue, square-sum ranges and hand
# the results back through another: every hand-over goes through the GIL
# and the queues' locks and condition variables (pthread mutexes and
# condition variables), mostly without contention.
import threading, queue
q = queue.Queue(maxsize=8); out = queue.Queue()
def work():
    while True:
        n = q.get()
        if n is None: break
        out.put(sum(i * i for i in range(n)))
ts = [threading.Thread(target=work) for _ in range(3)]
for t in ts: t.start()
for i in range(400): q.put(2000 + i)
for t in ts: q.put(None)
for t in ts: t.join()
s = 0
while not out.empty(): s += out.get()
print(s)

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace SSMConnect
{
    /// <summary>How a command on one target ended.</summary>
    public enum CommandStatus
    {
        /// <summary>The command ended and the agent reported its exit code.</summary>
        Completed,

        /// <summary>
        /// The command ended, but the agent reported no exit code: what
        /// <c>AWS-StartNonInteractiveCommand</c> always does (only a document with
        /// <c>separateOutputStream</c> reports one), or the command was killed by a signal.
        /// </summary>
        NoExitCode,

        /// <summary>The session could not be started or was lost; see <see cref="CommandResult.Error"/>.</summary>
        Failed,
    }

    /// <summary>The end of a command on one target.</summary>
    public sealed class CommandResult
    {
        /// <summary>The exit status a command without a reported exit code is given in <c>$LASTEXITCODE</c> (as the helper's <c>exec</c> exits).</summary>
        public const int UnknownExitCode = 10;

        /// <summary>The target as given.</summary>
        public string Target { get; internal set; } = string.Empty;

        /// <summary>The instance (or managed node) id the target resolved to; null when it never resolved.</summary>
        public string? InstanceId { get; internal set; }

        /// <summary>How it ended.</summary>
        public CommandStatus Status { get; internal set; }

        /// <summary>The remote exit code; null unless <see cref="Status"/> is Completed.</summary>
        public int? ExitCode { get; internal set; }

        /// <summary>What failed, when <see cref="Status"/> is Failed.</summary>
        public SsmException? Error { get; internal set; }

        /// <summary>When the session was asked for (local time).</summary>
        public DateTime StartTime { get; internal set; }

        /// <summary>When it ended (local time).</summary>
        public DateTime EndTime { get; internal set; }
    }

    /// <summary>What a <see cref="CommandRunner"/> reports, in order for each target.</summary>
    public enum CommandEventKind
    {
        /// <summary>A new stage of the session (<see cref="CommandEvent.Text"/>).</summary>
        Stage,

        /// <summary>One line of stdout (<see cref="CommandEvent.Text"/>, without its line break).</summary>
        Output,

        /// <summary>One line of stderr (<see cref="CommandEvent.Text"/>).</summary>
        Error,

        /// <summary>The target is done (<see cref="CommandEvent.Result"/>; with raw output, <see cref="CommandEvent.Data"/> holds all of stdout).</summary>
        Done,
    }

    /// <summary>One thing a <see cref="CommandRunner"/> reports.</summary>
    public sealed class CommandEvent
    {
        internal CommandEvent(CommandEventKind kind, string target, string? instanceId, string? text = null, byte[]? data = null, CommandResult? result = null)
        {
            Kind = kind;
            Target = target;
            InstanceId = instanceId;
            Text = text;
            Data = data;
            Result = result;
        }

        /// <summary>What happened.</summary>
        public CommandEventKind Kind { get; }

        /// <summary>The target as given.</summary>
        public string Target { get; }

        /// <summary>The instance id, once known.</summary>
        public string? InstanceId { get; }

        /// <summary>The stage or the line.</summary>
        public string? Text { get; }

        /// <summary>All of stdout, for <see cref="CommandEventKind.Done"/> in raw mode.</summary>
        public byte[]? Data { get; }

        /// <summary>The end, for <see cref="CommandEventKind.Done"/>.</summary>
        public CommandResult? Result { get; }
    }

    /// <summary>
    /// Runs one command on several targets, at most a given number at a time, each on a thread
    /// of its own blocked in the native wait, and hands what happens to one consumer as
    /// <see cref="CommandEvent"/>s (output split into lines, UTF-8). The consumer (a cmdlet on
    /// its pipeline thread) writes them; nothing here touches PowerShell.
    /// </summary>
    public sealed class CommandRunner : IDisposable
    {
        private readonly SsmClient client;
        private readonly bool raw;
        private readonly ConcurrentQueue<ExecRequest> waiting;
        private readonly BlockingCollection<CommandEvent> events = new BlockingCollection<CommandEvent>();
        private readonly List<Task> workers = new List<Task>();
        private readonly object gate = new object();
        private readonly HashSet<ExecOperation> running = new HashSet<ExecOperation>();
        private volatile bool stopping;

        /// <summary>Starts the commands.</summary>
        /// <param name="client">The client to start sessions from; it must outlive the runner.</param>
        /// <param name="requests">One request for each target.</param>
        /// <param name="throttleLimit">Sessions at most at one time.</param>
        /// <param name="raw">Stdout as bytes (all of it with the Done event) instead of lines.</param>
        public CommandRunner(SsmClient client, IReadOnlyList<ExecRequest> requests, int throttleLimit, bool raw)
        {
            this.client = client ?? throw new ArgumentNullException(nameof(client));
            if (requests is null)
            {
                throw new ArgumentNullException(nameof(requests));
            }
            this.raw = raw;
            waiting = new ConcurrentQueue<ExecRequest>(requests);
            // As many workers as sessions may run at once, each taking the next target when done.
            for (var i = 0; i < Math.Min(Math.Max(1, throttleLimit), requests.Count); i++)
            {
                workers.Add(Task.Factory.StartNew(Work, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default));
            }
            var count = workers.Count;
            Task.WhenAll(workers).ContinueWith(_ => Complete(), TaskScheduler.Default);
            if (count == 0)
            {
                Complete();
            }
        }

        /// <summary>
        /// The next event, waiting up to <paramref name="timeout"/> (whole milliseconds). False with a null event when
        /// none came in time; false with <paramref name="finished"/> set when every target is done.
        /// </summary>
        /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
        public bool TryNext(TimeSpan timeout, CancellationToken cancellationToken, out CommandEvent? next, out bool finished)
        {
            finished = false;
            try
            {
                if (events.TryTake(out next, (int)timeout.TotalMilliseconds, cancellationToken))
                {
                    return true;
                }
            }
            catch (InvalidOperationException)
            {
                next = null;
            }
            finished = events.IsCompleted;
            return false;
        }

        /// <summary>Passes Ctrl+C to every running command and starts no more.</summary>
        public void Interrupt()
        {
            stopping = true;
            foreach (var op in Running())
            {
                op.Interrupt();
            }
        }

        /// <summary>Ends every session (terminated at the service) and starts no more.</summary>
        public void Cancel()
        {
            stopping = true;
            foreach (var op in Running())
            {
                op.Cancel();
            }
        }

        /// <summary>Waits up to <paramref name="timeout"/> for every target to be done.</summary>
        public bool WaitAll(TimeSpan timeout)
        {
            Task[] all;
            lock (gate)
            {
                all = workers.ToArray();
            }
            try
            {
                return Task.WaitAll(all, timeout);
            }
            catch (AggregateException)
            {
                return true;
            }
        }

        private List<ExecOperation> Running()
        {
            lock (gate)
            {
                return new List<ExecOperation>(running);
            }
        }

        private void Post(CommandEvent e)
        {
            try
            {
                events.Add(e);
            }
            catch (Exception x) when (x is InvalidOperationException || x is ObjectDisposedException)
            {
                // The consumer is gone (disposed); nobody is listening.
            }
        }

        private void Complete()
        {
            try
            {
                events.CompleteAdding();
            }
            catch (ObjectDisposedException)
            {
            }
        }

        private void Work()
        {
            while (waiting.TryDequeue(out var request))
            {
                Run(request);
            }
        }

        private void Run(ExecRequest request)
        {
            var result = new CommandResult { Target = request.Target, StartTime = DateTime.Now };
            if (stopping)
            {
                Finish(result, null, new SsmException(SsmErrorKind.Cancelled, "cancelled before it started"));
                return;
            }
            ExecOperation op;
            try
            {
                op = client.BeginExec(request);
            }
            catch (SsmException e)
            {
                Finish(result, null, e);
                return;
            }
            using (op)
            {
                lock (gate)
                {
                    running.Add(op);
                }
                try
                {
                    Pump(op, result);
                }
                finally
                {
                    lock (gate)
                    {
                        running.Remove(op);
                    }
                }
            }
        }

        private void Pump(ExecOperation op, CommandResult result)
        {
            var stdout = new LineSplitter();
            var stderr = new LineSplitter();
            var bytes = raw ? new System.IO.MemoryStream() : null;
            string? stage = null;
            string? instanceId = null;
            OperationState state;
            while (true)
            {
                state = op.WaitForChange(TimeSpan.FromSeconds(1));
                instanceId ??= op.InstanceId;
                var now = op.Stage;
                if (!string.Equals(now, stage, StringComparison.Ordinal))
                {
                    stage = now;
                    Post(new CommandEvent(CommandEventKind.Stage, result.Target, instanceId, now));
                }
                // Output taken after the state left Running is all there is: a null then is the end.
                while (op.TryTakeOutput(out var stream, out var data))
                {
                    if (stream == ExecStream.Stderr)
                    {
                        foreach (var line in stderr.Feed(data))
                        {
                            Post(new CommandEvent(CommandEventKind.Error, result.Target, instanceId, line));
                        }
                    }
                    else if (bytes is not null)
                    {
                        bytes.Write(data, 0, data.Length);
                    }
                    else
                    {
                        foreach (var line in stdout.Feed(data))
                        {
                            Post(new CommandEvent(CommandEventKind.Output, result.Target, instanceId, line));
                        }
                    }
                }
                if (state != OperationState.Running)
                {
                    break;
                }
            }
            if (stdout.Flush() is string lastOut)
            {
                Post(new CommandEvent(CommandEventKind.Output, result.Target, instanceId, lastOut));
            }
            if (stderr.Flush() is string lastErr)
            {
                Post(new CommandEvent(CommandEventKind.Error, result.Target, instanceId, lastErr));
            }
            result.InstanceId = instanceId ?? op.InstanceId;
            if (state == OperationState.Succeeded)
            {
                result.ExitCode = op.ExitCode;
                result.Status = result.ExitCode is null ? CommandStatus.NoExitCode : CommandStatus.Completed;
                Finish(result, bytes?.ToArray(), null);
            }
            else
            {
                Finish(result, bytes?.ToArray(), op.Error ?? new SsmException(SsmErrorKind.Cancelled, "cancelled"));
            }
        }

        private void Finish(CommandResult result, byte[]? data, SsmException? error)
        {
            result.EndTime = DateTime.Now;
            if (error is not null)
            {
                result.Status = CommandStatus.Failed;
                result.Error = error;
            }
            Post(new CommandEvent(CommandEventKind.Done, result.Target, result.InstanceId, data: data, result: result));
        }

        /// <summary>Ends every session still running and frees what the runner holds.</summary>
        public void Dispose()
        {
            Cancel();
            WaitAll(TimeSpan.FromSeconds(10));
            events.Dispose();
        }
    }

    /// <summary>Splits UTF-8 output into lines (<c>\n</c> or <c>\r\n</c>) across piece boundaries.</summary>
    public sealed class LineSplitter
    {
        private readonly Decoder decoder = new UTF8Encoding(false).GetDecoder();
        private readonly StringBuilder pending = new StringBuilder();

        /// <summary>The lines <paramref name="data"/> completes.</summary>
        public IEnumerable<string> Feed(byte[] data)
        {
            if (data is null)
            {
                throw new ArgumentNullException(nameof(data));
            }
            var chars = new char[decoder.GetCharCount(data, 0, data.Length)];
            var n = decoder.GetChars(data, 0, data.Length, chars, 0);
            var lines = new List<string>();
            for (var i = 0; i < n; i++)
            {
                if (chars[i] == '\n')
                {
                    lines.Add(Take());
                }
                else
                {
                    pending.Append(chars[i]);
                }
            }
            return lines;
        }

        /// <summary>The last line when the output did not end with a line break; null otherwise.</summary>
        public string? Flush()
        {
            var chars = new char[decoder.GetCharCount(Array.Empty<byte>(), 0, 0, flush: true)];
            decoder.GetChars(Array.Empty<byte>(), 0, 0, chars, 0, flush: true);
            pending.Append(chars);
            return pending.Length == 0 ? null : Take();
        }

        private string Take()
        {
            if (pending.Length > 0 && pending[pending.Length - 1] == '\r')
            {
                pending.Length--;
            }
            var line = pending.ToString();
            pending.Clear();
            return line;
        }
    }
}

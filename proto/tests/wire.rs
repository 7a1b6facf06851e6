//! The wire shapes: Goop²'s exact JSON decodes, ours round-trips, and numbers pass untouched.

use proto::cluster::{
    AttemptOutcome, ClusterMessage, DecodeError, JobState, MAX_BATCH, QueueStats, ResultStatus,
    Sender, WorkerInfo, WorkerStatus, cluster_topic, parse_cluster_topic,
};
use proto::{Attempt, JobId, JobMode, JobStatus};

/// A `JobState` as Goop²'s `/api/cluster/jobs` returns it after a reload from its database.
const GOOP2_JOB_STATE: &str = r#"{
  "job": {"id":"9f3a0c1d2e4b5a69","type":"calculate","mode":"","payload":{"expression":"1+2"},
          "priority":5,"timeout_s":-1,"max_retry":2},
  "status":"running",
  "worker_id":"12D3KooWQm7example",
  "error":"binary exited: signal: killed",
  "progress":40,
  "progress_msg":"halfway",
  "retries":1,
  "created_at":"2026-04-06T12:00:00+02:00",
  "started_at":"2026-04-06T12:00:05+02:00",
  "done_at":"",
  "elapsed_ms":0
}"#;

#[test]
fn goop2_job_state_decodes() {
    let state: JobState = serde_json::from_str(GOOP2_JOB_STATE).unwrap();
    assert_eq!(state.job.id, "9f3a0c1d2e4b5a69".parse::<JobId>().unwrap());
    assert_eq!(state.job.job_type, "calculate");
    assert_eq!(state.job.mode, JobMode::Oneshot);
    assert_eq!(
        state.job.payload.as_ref().unwrap().get(),
        r#"{"expression":"1+2"}"#
    );
    assert_eq!(
        (state.job.priority, state.job.timeout_s, state.job.max_retry),
        (5, 0, 2)
    );
    assert_eq!(state.status, JobStatus::Running);
    assert_eq!(state.worker_id.unwrap().as_str(), "12D3KooWQm7example");
    assert_eq!(state.progress, 40.0);
    assert_eq!(state.retries, 1);
    assert_eq!(state.created_at.to_string(), "2026-04-06T10:00:00.000Z");
    assert_eq!(
        state.started_at.unwrap().to_string(),
        "2026-04-06T10:00:05.000Z"
    );
    assert_eq!((state.done_at, state.elapsed_ms), (None, None));
    assert_eq!(state.attempt, Attempt(0));
}

#[test]
fn job_state_writes_goop2_names_and_omits_empty_additions() {
    let state: JobState = serde_json::from_str(GOOP2_JOB_STATE).unwrap();
    let json: serde_json::Value = serde_json::to_value(&state).unwrap();
    let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "created_at",
            "error",
            "job",
            "progress",
            "progress_msg",
            "retries",
            "started_at",
            "status",
            "worker_id"
        ]
    );
    // A whole percentage stays an integer for Goop²'s readers.
    assert_eq!(json["progress"].to_string(), "40");
    assert_eq!(json["job"]["mode"], "oneshot");
}

#[test]
fn job_state_with_attempt_history_round_trips() {
    let json = r#"{"job":{"id":"0000000000000001","type":"t","mode":"continuous","priority":-3,
        "timeout_s":30,"max_retry":1,"labels":["nightly"],"after":["0000000000000002"],
        "not_before":"2026-11-21T00:00:00.000Z"},
        "status":"failed","retries":2,"created_at":"2026-11-21T00:00:00.000Z","attempt":2,
        "losses":1,"progress":12.5,
        "attempts":[{"attempt":1,"worker_id":"peerA","started_at":"2026-11-21T00:00:01.000Z",
                     "ended_at":"2026-11-21T00:00:31.000Z","outcome":"timed_out","error":"timed out after 30s"}]}"#;
    let state: JobState = serde_json::from_str(json).unwrap();
    assert_eq!(state.job.mode, JobMode::Continuous);
    assert_eq!(state.job.after, vec![JobId::from_u64(2)]);
    assert_eq!(state.attempts[0].outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(state.losses, 1);
    let again: JobState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(again.attempts, state.attempts);
    assert_eq!(again.progress, 12.5);
    assert_eq!(again.job.labels, ["nightly"]);
}

#[test]
fn goop2_worker_info_and_stats_decode() {
    let worker: WorkerInfo = serde_json::from_str(
        r#"{"peer_id":"12D3KooWx","status":"busy","binary_path":"/bin/exec","binary_mode":"daemon",
            "verified":true,"job_types":["calculate",""],"capacity":4,"running_jobs":2,
            "last_seen":"2026-04-06T10:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(worker.status, WorkerStatus::Busy);
    assert_eq!(worker.job_types, ["calculate"]);
    assert_eq!((worker.capacity, worker.running_jobs), (4, 2));
    let stats: QueueStats =
        serde_json::from_str(r#"{"pending":3,"running":1,"completed":7,"failed":0,"workers":2}"#)
            .unwrap();
    assert_eq!(
        stats,
        QueueStats {
            pending: 3,
            running: 1,
            completed: 7,
            workers: 2,
            ..QueueStats::default()
        }
    );
}

#[test]
fn goop2_cluster_messages_decode() {
    let assign = ClusterMessage::decode(
        "job:assign",
        r#"{"job_id":"00000000000000aa","payload":null,"timeout_s":0,"type":"calculate"}"#,
    )
    .unwrap();
    let ClusterMessage::JobAssign(assign) = assign else {
        panic!("not an assign")
    };
    assert_eq!(
        (assign.attempt, assign.mode, assign.priority),
        (Attempt(0), JobMode::Oneshot, 0)
    );
    assert!(assign.payload.is_none());

    let ClusterMessage::JobProgress(progress) = ClusterMessage::decode(
        "job:progress",
        r#"{"job_id":"00000000000000aa","percent":50,"message":"half"}"#,
    )
    .unwrap() else {
        panic!("not progress")
    };
    assert_eq!(
        (progress.percent, progress.message.as_str()),
        (50.0, "half")
    );

    let ClusterMessage::JobResult(done) = ClusterMessage::decode(
        "job:result",
        r#"{"job_id":"00000000000000aa","status":"completed","result":null}"#,
    )
    .unwrap() else {
        panic!("not a result")
    };
    assert_eq!(done.status, ResultStatus::Completed);
    let ClusterMessage::JobResult(failed) = ClusterMessage::decode(
        "job:result",
        r#"{"job_id":"00000000000000aa","status":"failed","error":"binary exited: exit status 2"}"#,
    )
    .unwrap() else {
        panic!("not a result")
    };
    assert_eq!(
        failed.error.as_deref(),
        Some("binary exited: exit status 2")
    );
    // Our own status for a job the worker could not start.
    let ClusterMessage::JobResult(unstarted) = ClusterMessage::decode(
        "job:result",
        r#"{"job_id":"00000000000000aa","attempt":2,"status":"not_started","error":"cannot start executor"}"#,
    )
    .unwrap() else {
        panic!("not a result")
    };
    assert_eq!(unstarted.status, ResultStatus::NotStarted);

    let ClusterMessage::WorkerVerified(verified) = ClusterMessage::decode(
        "worker:verified",
        r#"{"ok":false,"types":null,"capacity":0}"#,
    )
    .unwrap() else {
        panic!("not verified")
    };
    assert!(!verified.ok && verified.types.is_empty() && verified.capacity == 0);

    for (msg_type, payload, sender) in [
        (
            "job:ack",
            r#"{"job_id":"00000000000000aa"}"#,
            Sender::Worker,
        ),
        (
            "job:cancel",
            r#"{"job_id":"00000000000000aa"}"#,
            Sender::Host,
        ),
        (
            "worker:binary",
            r#"{"path":"/x","mode":"oneshot"}"#,
            Sender::Worker,
        ),
        ("worker:status", r#"{"status":"paused"}"#, Sender::Worker),
        ("worker:pause", r#"{"action":"pause"}"#, Sender::Host),
        ("worker:resume", r#"{"action":"resume"}"#, Sender::Host),
        ("worker:verify", r#"{"action":"verify"}"#, Sender::Host),
        ("shutdown", r#"{"reason":"cluster closed"}"#, Sender::Host),
    ] {
        let message = ClusterMessage::decode(msg_type, payload).unwrap();
        assert_eq!(message.msg_type(), msg_type);
        assert_eq!(message.sender(), sender, "{msg_type}");
    }
}

#[test]
fn goop2_result_with_unknown_status_is_refused() {
    let err = ClusterMessage::decode(
        "job:result",
        r#"{"job_id":"00000000000000aa","status":"weird"}"#,
    )
    .unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
}

#[test]
fn big_numbers_pass_through_untouched() {
    let payload = r#"{"a":9007199254740993,"b":12345678901234567890,"c":99999999999999999999999,"d":1.000000000000000000001}"#;
    let wire = format!(
        r#"{{"job_id":"00000000000000aa","type":"t","payload":{payload},"timeout_s":0,"attempt":3,"mode":"oneshot","priority":1}}"#
    );
    let message = ClusterMessage::decode("job:assign", &wire).unwrap();
    assert!(
        message.encode_payload().get().contains(payload),
        "{}",
        message.encode_payload()
    );

    let result = format!(
        r#"{{"job_id":"00000000000000aa","attempt":3,"status":"completed","result":{payload}}}"#
    );
    let ClusterMessage::JobResult(decoded) = ClusterMessage::decode("job:result", &result).unwrap()
    else {
        panic!("not a result")
    };
    assert_eq!(decoded.result.unwrap().get(), payload);
}

#[test]
fn batches_round_trip_and_refuse_nesting() {
    let batch = ClusterMessage::decode(
        "batch",
        r#"{"messages":[{"type":"job:ack","payload":{"job_id":"0000000000000001","attempt":1}},
                        {"type":"job:result","payload":{"job_id":"0000000000000001","attempt":1,"status":"completed","result":[1,2]}}]}"#,
    )
    .unwrap();
    let encoded = batch.encode_payload();
    assert_eq!(
        encoded.get(),
        r#"{"messages":[{"type":"job:ack","payload":{"job_id":"0000000000000001","attempt":1}},{"type":"job:result","payload":{"job_id":"0000000000000001","attempt":1,"status":"completed","result":[1,2]}}]}"#
    );
    let again = ClusterMessage::decode("batch", encoded.get()).unwrap();
    let ClusterMessage::Batch(messages) = again else {
        panic!("not a batch")
    };
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].msg_type(), "job:result");

    let nested = r#"{"messages":[{"type":"batch","payload":{"messages":[]}}]}"#;
    assert!(matches!(
        ClusterMessage::decode("batch", nested),
        Err(DecodeError::NestedBatch)
    ));
    assert!(matches!(
        ClusterMessage::decode("job:teleport", "{}"),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        ClusterMessage::decode("job:ack", "[]"),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn a_batch_decodes_in_one_pass_with_keys_in_any_order_and_refuses_what_it_must() {
    let ack = r#"{"job_id":"0000000000000001","attempt":1}"#;
    // Payload before type, an unknown key, and an escaped type name.
    let text = format!(
        r#"{{"extra":[1,{{"a":2}}],"messages":[{{"payload":{ack},"type":"job:ack"}},
            {{"note":"x","type":"job\u003aack","payload":{ack}}}]}}"#
    );
    let ClusterMessage::Batch(messages) = ClusterMessage::decode("batch", &text).unwrap() else {
        panic!("not a batch")
    };
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert_eq!(message.msg_type(), "job:ack");
        assert_eq!(message.encode_payload().get(), ack);
    }

    let refused = |text: &str| ClusterMessage::decode("batch", text).unwrap_err();
    let item = |msg_type: &str, payload: &str| {
        format!(
            r#"{{"messages":[{{"type":"job:ack","payload":{ack}}},{{"type":"{msg_type}","payload":{payload}}}]}}"#
        )
    };
    let early = |msg_type: &str, payload: &str| {
        format!(r#"{{"messages":[{{"payload":{payload},"type":"{msg_type}"}}]}}"#)
    };
    for text in [
        item("batch", r#"{"messages":[]}"#),
        early("batch", r#"{"messages":[]}"#),
    ] {
        assert!(matches!(refused(&text), DecodeError::NestedBatch), "{text}");
    }
    for text in [item("job:teleport", "{}"), early("job:teleport", "{}")] {
        assert!(
            matches!(refused(&text), DecodeError::UnknownType(t) if t == "job:teleport"),
            "{text}"
        );
    }
    for text in [
        item("job:result", r#"{"job_id":7}"#),
        early("job:result", "[]"),
    ] {
        assert!(
            matches!(refused(&text), DecodeError::Malformed { msg_type, .. } if msg_type == "job:result"),
            "{text}"
        );
    }
    for text in [
        "[]",
        "{}",
        r#"{"messages":[{"type":"job:ack"}]}"#,
        r#"{"messages":[{"payload":{}}]}"#,
        r#"{"messages":[{"type":"job:ack","type":"job:ack","payload":{}}]}"#,
        r#"{"messages":[]} trailing"#,
        r#"{"messages":[],"messages":[]}"#,
    ] {
        assert!(
            matches!(refused(text), DecodeError::Malformed { msg_type, .. } if msg_type == "batch"),
            "{text}"
        );
    }

    let at_limit = format!(
        r#"{{"messages":[{}]}}"#,
        vec![format!(r#"{{"type":"job:ack","payload":{ack}}}"#); MAX_BATCH].join(",")
    );
    let ClusterMessage::Batch(messages) = ClusterMessage::decode("batch", &at_limit).unwrap()
    else {
        panic!("not a batch")
    };
    assert_eq!(messages.len(), MAX_BATCH);
    // Past the limit the rest is counted, not decoded: a bad item there changes nothing.
    let over = format!(
        r#"{},{{"type":"job:teleport","payload":0}},1]}}"#,
        at_limit.strip_suffix("]}").unwrap()
    );
    assert!(matches!(refused(&over), DecodeError::BatchTooLarge(n) if n == MAX_BATCH + 2));
}

mod batch_property {
    use proptest::prelude::*;
    use proto::cluster::ClusterMessage;

    /// A job message as text: its type and its payload.
    fn message() -> impl Strategy<Value = (&'static str, String)> {
        let id = any::<u64>().prop_map(|n| format!("{n:016x}"));
        let result = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-z\\\"é ]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#"{"deep":[[1,{"x":"y"}],12345678901234567890]}"#.to_owned()),
        ];
        prop_oneof![
            (id.clone(), 1..5u32).prop_map(|(id, a)| {
                ("job:ack", format!(r#"{{"job_id":"{id}","attempt":{a}}}"#))
            }),
            (id.clone(), 1..5u32, result).prop_map(|(id, a, r)| {
                let payload = format!(
                    r#"{{"job_id":"{id}","attempt":{a},"status":"completed","result":{r}}}"#
                );
                ("job:result", payload)
            }),
            (id, 0..=100u32).prop_map(|(id, p)| {
                (
                    "job:progress",
                    format!(r#"{{"job_id":"{id}","attempt":1,"percent":{p}}}"#),
                )
            }),
        ]
    }

    proptest! {
        /// The one-pass decode of a batch gives what decoding each item alone gives, whichever
        /// key of an item comes first.
        #[test]
        fn a_batch_decodes_as_its_items_do(
            items in prop::collection::vec((message(), any::<bool>()), 0..40),
        ) {
            let text = items
                .iter()
                .map(|((msg_type, payload), type_first)| if *type_first {
                    format!(r#"{{"type":"{msg_type}","payload":{payload}}}"#)
                } else {
                    format!(r#"{{ "payload" : {payload} , "type" : "{msg_type}" }}"#)
                })
                .collect::<Vec<_>>()
                .join(",");
            let decoded = ClusterMessage::decode("batch", &format!(r#"{{"messages":[{text}]}}"#));
            let Ok(ClusterMessage::Batch(messages)) = decoded else {
                return Err(TestCaseError::fail(format!("not a batch: {decoded:?}")));
            };
            prop_assert_eq!(messages.len(), items.len());
            for (message, ((msg_type, payload), _)) in messages.iter().zip(&items) {
                let alone = ClusterMessage::decode(msg_type, payload).unwrap();
                prop_assert_eq!(message.msg_type(), *msg_type);
                prop_assert_eq!(message.encode_payload().get().to_owned(), alone.encode_payload().get().to_owned());
            }
        }
    }
}

#[test]
fn topics_split_on_the_group_id() {
    let group = "9f3a".parse().unwrap();
    let topic = cluster_topic(&group, "job:assign");
    assert_eq!(topic, "cluster:9f3a:job:assign");
    let (parsed, msg_type) = parse_cluster_topic(&topic).unwrap();
    assert_eq!((parsed, msg_type), (group, "job:assign"));
    assert!(parse_cluster_topic("cluster:9f3a").is_none());
    assert!(parse_cluster_topic("group:9f3a:msg").is_none());
}

mod api {
    use proto::api::{ClusterEvent, SubmitBatch, SubmitJob};
    use proto::{JobMode, JobStatus};

    #[test]
    fn batch_submit_is_strict_about_fields_and_numbers() {
        let ok: SubmitBatch = serde_json::from_str(
            r#"{"jobs":[{"type":"calculate","payload":{"n":12345678901234567890},"priority":3,
                "mode":"continuous","labels":["a"],"after":["0000000000000001"],"idempotency_key":"k1"}]}"#,
        )
        .unwrap();
        let job = &ok.jobs[0];
        assert_eq!(
            job.payload.as_ref().unwrap().get(),
            r#"{"n":12345678901234567890}"#
        );
        assert_eq!((job.mode, job.priority), (JobMode::Continuous, 3));

        for bad in [
            r#"{"jobs":[{"type":"t","priorty":3}]}"#,
            r#"{"jobs":[{"type":"t","timeout_s":-1}]}"#,
            r#"{"jobs":[{"type":"t","priority":"high"}]}"#,
            r#"{"jobs":[{"type":"t","mode":"sometimes"}]}"#,
            r#"{"jobs":[{"type":"t","after":["nope"]}]}"#,
            r#"{"jobs":[{"payload":{}}]}"#,
            r#"{"jobs":[], "extra":1}"#,
        ] {
            assert!(serde_json::from_str::<SubmitBatch>(bad).is_err(), "{bad}");
        }
        let round = serde_json::to_string(&SubmitJob::new("t")).unwrap();
        assert_eq!(
            round,
            r#"{"type":"t","mode":"oneshot","priority":0,"timeout_s":0,"max_retry":0}"#
        );
    }

    #[test]
    fn events_round_trip_through_their_names() {
        let data = r#"{"job_id":"00000000000000ff","status":"completed","attempt":2,"retries":1}"#;
        let event = ClusterEvent::decode("job", data).unwrap();
        assert_eq!(event.name(), "job");
        let ClusterEvent::Job(job) = &event else {
            panic!("not a job event")
        };
        assert_eq!(job.status, JobStatus::Completed);
        let again =
            ClusterEvent::decode(event.name(), &serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(again.name(), "job");

        let output = ClusterEvent::decode(
            "output",
            r#"{"job_id":"00000000000000ff","attempt":1,"data":{"big":99999999999999999999999}}"#,
        )
        .unwrap();
        assert!(
            serde_json::to_string(&output)
                .unwrap()
                .contains("99999999999999999999999")
        );
        let lagged = ClusterEvent::decode("lagged", r#"{"missed":7}"#).unwrap();
        assert!(matches!(lagged, ClusterEvent::Lagged { missed: 7 }));
    }
}

#[test]
fn an_attempt_outcome_names_itself_as_it_is_serialized() {
    for outcome in [
        AttemptOutcome::Completed,
        AttemptOutcome::Failed,
        AttemptOutcome::TimedOut,
        AttemptOutcome::Cancelled,
        AttemptOutcome::Lost,
    ] {
        let wire = serde_json::to_string(&outcome).unwrap();
        assert_eq!(wire, format!("\"{}\"", outcome.as_str()));
    }
}

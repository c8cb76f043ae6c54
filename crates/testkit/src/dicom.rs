//! DICOM test data made by Orthanc itself (`POST /tools/create-dicom`), and
//! checks that compare stored files byte for byte.

use crate::Orthanc;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A study created in an Orthanc.
#[derive(Debug, Clone)]
pub struct Study {
    /// Orthanc's identifier of the study.
    pub id: String,
    pub study_uid: String,
    pub instance_ids: Vec<String>,
}

/// Creates a study of `instances` instances in one series. Each carries
/// `payload_bytes` of data (an encapsulated PDF document of that size, so that
/// studies of any size can be made without shipping files).
pub fn create_study(
    orthanc: &Orthanc,
    patient_id: &str,
    instances: usize,
    payload_bytes: usize,
) -> Study {
    // Orthanc checks the PDF magic; the rest is arbitrary bytes.
    let mut payload = b"%PDF-1.4\n".to_vec();
    payload.extend((0..payload_bytes).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8));
    let content = format!(
        "data:application/pdf;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&payload)
    );
    let mut instance_ids = Vec::new();
    let mut series: Option<String> = None;
    for n in 0..instances {
        let mut body = json!({
            "Tags": {
                "PatientID": patient_id,
                "PatientName": format!("TEST^{patient_id}"),
                "StudyDescription": "orthanc-dicomweb-oauth test study",
                "SeriesDescription": "payload",
                "InstanceNumber": (n + 1).to_string(),
                "Modality": "DOC",
            },
            "Content": content,
        });
        if let Some(series) = &series {
            body["Parent"] = json!(series);
            body["Tags"] = json!({"InstanceNumber": (n + 1).to_string()});
        }
        let reply = orthanc.post_json("/tools/create-dicom", &body);
        assert_eq!(reply.status, 200, "create-dicom: {}", reply.text());
        let id = reply.json()["ID"].as_str().expect("instance ID").to_owned();
        if series.is_none() {
            series = Some(
                orthanc.get(&format!("/instances/{id}/series")).json()["ID"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        instance_ids.push(id);
    }
    let study = orthanc
        .get(&format!("/instances/{}/study", instance_ids[0]))
        .json();
    Study {
        id: study["ID"].as_str().unwrap().to_owned(),
        study_uid: study["MainDicomTags"]["StudyInstanceUID"]
            .as_str()
            .unwrap()
            .to_owned(),
        instance_ids,
    }
}

/// SOP Instance UID → SHA-256 of the stored DICOM file, for every instance of
/// the study with this Study Instance UID in `orthanc` (empty if absent).
pub fn study_file_hashes(orthanc: &Orthanc, study_uid: &str) -> Vec<(String, String)> {
    let found = orthanc.post_json(
        "/tools/find",
        &json!({"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": true}),
    );
    assert_eq!(found.status, 200, "{}", found.text());
    let mut hashes: Vec<(String, String)> = found
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|instance: &Value| {
            let id = instance["ID"].as_str().unwrap();
            let uid = instance["MainDicomTags"]["SOPInstanceUID"]
                .as_str()
                .unwrap()
                .to_owned();
            let file = orthanc.get(&format!("/instances/{id}/file"));
            assert_eq!(file.status, 200);
            (uid, hex(&Sha256::digest(&file.body)))
        })
        .collect();
    hashes.sort();
    hashes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

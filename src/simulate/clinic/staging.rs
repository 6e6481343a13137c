//! The cases the MOH quarterly cohort tells apart beyond outcomes (moh-reports.md): the reason
//! for starting ART by its answer (and free text the engine cannot name), the WHO staging
//! criteria present at initiation (TB now or within two years, Kaposi's sarcoma, another
//! criterion), TB status at visits (and patients never screened), and adherence tied to the
//! ARV order it measures. The engine finds these answers by name.

use chrono::NaiveDateTime;

use super::rows::ObsValue;
use super::Clinic;

/// 'Reason for ART eligibility'.
const REASON_FOR_STARTING: i64 = 7563;
/// Its answers: WHO stage III / IV (adult, peds), 'Patient pregnant', 'Breastfeeding',
/// 'Asymptomatic', 'CD4 count less than or equal to 500', 'HIV PCR', 'Presumed severe HIV',
/// 'Unknown'; `None` writes a free-text reason (the engine counts it as unknown).
const REASONS: &[Option<i64>] = &[
    Some(9620),
    Some(9621),
    Some(9622),
    Some(9623),
    Some(9624),
    Some(9625),
    Some(9626),
    Some(9627),
    Some(9628),
    Some(9629),
    Some(9630),
    None,
];
/// 'Who stages criteria present'.
const STAGING_CRITERIA: i64 = 2743;
/// The criteria present at initiation: none; current pulmonary or extrapulmonary TB; TB within
/// the last two years; Kaposi's sarcoma (alone or with a current TB); oral candidiasis.
const CRITERIA: &[&[i64]] = &[
    &[],
    &[],
    &[9640],
    &[9641],
    &[9642],
    &[9643],
    &[9643, 9640],
    &[9642, 9641],
    &[9644],
];
/// 'TB status' and its answers: not suspected, suspected, confirmed on treatment, confirmed not
/// on treatment.
const TB_STATUS: i64 = 7459;
const TB_ANSWERS: &[i64] = &[7454, 7455, 7456, 7458];
/// 'Drug order adherence' (per cent), tied to the ARV order whose pills were counted.
const ADHERENCE: i64 = 6987;
const ADHERENCE_VALUES: &[f64] = &[100.0, 98.0, 95.0, 105.0, 94.0, 105.5, 80.0, 120.0];

impl Clinic {
    /// The reason for starting ART and the staging criteria present, in the staging
    /// encounter.
    pub(super) async fn staging(
        &mut self,
        pid: i64,
        encounter: i64,
        when: NaiveDateTime,
    ) -> anyhow::Result<()> {
        let value = match *self.rng.pick(REASONS) {
            Some(answer) => ObsValue::Coded(answer),
            None => ObsValue::Text("WHO stage 3".into()),
        };
        self.obs_in(pid, REASON_FOR_STARTING, encounter, when, value)
            .await?;
        for &criterion in *self.rng.pick(CRITERIA) {
            self.obs_in(
                pid,
                STAGING_CRITERIA,
                encounter,
                when,
                ObsValue::Coded(criterion),
            )
            .await?;
        }
        Ok(())
    }

    /// TB status at a consultation; one patient in ten is never screened.
    pub(super) async fn tb_status(
        &mut self,
        pid: i64,
        encounter: i64,
        when: NaiveDateTime,
    ) -> anyhow::Result<()> {
        if pid % 10 == 0 {
            return Ok(());
        }
        let answer = *self.rng.pick(TB_ANSWERS);
        self.obs_in(pid, TB_STATUS, encounter, when, ObsValue::Coded(answer))
            .await?;
        Ok(())
    }

    /// Adherence to the drug's last order, measured at a pill count; one patient in seven
    /// never has it written.
    pub(super) async fn adherence(
        &mut self,
        pid: i64,
        encounter: i64,
        when: NaiveDateTime,
        order_id: i64,
    ) -> anyhow::Result<()> {
        if pid % 7 == 3 {
            return Ok(());
        }
        let value = *self.rng.pick(ADHERENCE_VALUES);
        self.obs_on(
            pid,
            ADHERENCE,
            encounter,
            when,
            Some(order_id),
            ObsValue::Numeric(value),
            None,
        )
        .await?;
        Ok(())
    }
}

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
fn hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(" ")
}
fn main() {
    let rows = 100_000;
    let bytes = {
        let mut workbook = Workbook::new();
        let sheet = workbook.add_worksheet();
        let headers = [
            "registration_no*",
            "email",
            "full_name*",
            "school*",
            "date_of_birth*",
            "pincode*",
            "phone",
            "address",
            "program_name",
            "batch",
        ];
        for (c, h) in headers.iter().enumerate() {
            sheet.write_string(0, c as u16, *h).unwrap();
        }
        let date = Format::new().set_num_format("dd/mm/yyyy");
        for i in 0..rows {
            let r = i as u32 + 1;
            sheet
                .write_string(r, 0, format!("{}{:06}", 2021 + i % 4, i))
                .unwrap();
            sheet
                .write_string(r, 1, format!("student{i}@campus.example.in"))
                .unwrap();
            sheet.write_string(r, 2, format!("Student {i}")).unwrap();
            sheet
                .write_string(r, 3, "School of Computer Science and Engineering")
                .unwrap();
            sheet
                .write_datetime_with_format(
                    r,
                    4,
                    ExcelDateTime::from_ymd(
                        2000 + (i % 6) as u16,
                        1 + (i % 12) as u8,
                        1 + (i % 28) as u8,
                    )
                    .unwrap(),
                    &date,
                )
                .unwrap();
            sheet
                .write_number(r, 5, (110_001 + i % 800_000) as f64)
                .unwrap();
            sheet.write_string(r, 6, format!("98{:08}", i)).unwrap();
            sheet.write_string(r, 7, "Hostel Block C").unwrap();
            sheet.write_string(r, 8, "B.Tech CSE").unwrap();
            sheet.write_number(r, 9, (2021 + i % 4) as f64).unwrap();
        }
        workbook.save_to_buffer().unwrap()
    };
    std::fs::write("/tmp/bench100k.xlsx", &bytes).unwrap();
    println!("after generating: {}", hwm());
}

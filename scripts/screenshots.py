"""The README's two pictures: the inspector on a blocked request, and an evaluation report.

    python scripts/screenshots.py --gateway http://127.0.0.1:8000 --prompt "..." --policy strict \\
        --report report.html --out docs/img

The gateway must run with the inspector on (and the named policy in ``inspector.policies``); the
report comes from ``thoughtguard eval traces FILE --html report.html``. Debian's headless Chromium
and chromedriver take the pictures (`apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--policy", default="default")
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    drv = browser(1400, 900)
    try:
        drv.get(args.gateway.rstrip("/") + "/inspect")
        WebDriverWait(drv, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        Select(drv.find_element(By.ID, "policy")).select_by_value(args.policy)
        drv.find_element(By.ID, "prompt").send_keys(args.prompt)
        drv.find_element(By.ID, "send").click()
        WebDriverWait(drv, 300).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done") == "1")
        drv.save_screenshot(str(args.out / "inspector.png"))
    finally:
        drv.quit()
    drv = browser(1280, 2000)
    try:
        drv.get(args.report.resolve().as_uri())
        drv.save_screenshot(str(args.out / "report.png"))
    finally:
        drv.quit()
    print(f"wrote {args.out / 'inspector.png'} and {args.out / 'report.png'}")


if __name__ == "__main__":
    main()

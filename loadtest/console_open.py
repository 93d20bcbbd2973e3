#!/usr/bin/env python3
"""Keeps the operator console open in headless Chromium for a while, logged in and showing a model, so that its
polling (every second) runs against the gateway while the load tester measures throughput (`make console-cost`).

    console_open.py --admin http://127.0.0.1:18003 --token T --model breast-cancer --seconds 12
"""

import argparse
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--admin", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--model", default="breast-cancer")
    p.add_argument("--seconds", type=float, required=True)
    a = p.parse_args()
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        o.add_argument(flag)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    try:
        d.get(a.admin.rstrip("/") + "/console")
        WebDriverWait(d, 15).until(lambda _d: d.find_elements(By.ID, "token-input"))
        d.find_element(By.ID, "token-input").send_keys(a.token)
        d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
        card = f'.model-card[data-model="{a.model}"]'
        WebDriverWait(d, 15).until(lambda _d: d.find_elements(By.CSS_SELECTOR, card))
        d.find_element(By.CSS_SELECTOR, card).click()
        print("console open", flush=True)
        # The page polls on its own; this process only keeps it open for the measured run.
        time.sleep(a.seconds)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
